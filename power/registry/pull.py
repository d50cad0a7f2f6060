"""Pull: registry names (Ollama's, ``hf.co/…``, any OCI registry) and direct GGUF URLs.

:func:`pull` is an async generator of Ollama's progress objects. Blobs appear in the store only
once verified; the manifest is written last, verbatim and atomically, so a failed pull never
leaves a model that points at missing data. Names on the default registry that it cannot serve
fall back to the offline catalog's sources, stored under the name that was asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec

from power.create.build import create_model
from power.errors import PowerError, RegistryError
from power.registry.catalog import catalog_sources
from power.registry.client import error_text, map_errors, open_session, read_at_most
from power.registry.download import Transfer, download_blob
from power.registry.service import RegistryBlob, RegistryService, UrlSource
from power.store import manifest as mf
from power.store.names import ModelName, parse_name

__all__ = ["ManifestNotFoundError", "is_url", "pull", "pull_as", "url_model_name"]

log = logging.getLogger(__name__)

Progress = dict[str, Any]

ACCEPT = f"{mf.MEDIA_TYPE_MANIFEST}, application/vnd.oci.image.manifest.v1+json"
MAX_MANIFEST_BYTES = 4 << 20
LAYERS_AHEAD = 4  # blobs downloading at once: the one being reported and the next ones...
PREFETCH_MAX = 16 << 20  # ...when they are this small (templates, params, configs)
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class ManifestNotFoundError(RegistryError):
    """The registry has no such model (its manifest answered 404)."""


def is_url(model: str) -> bool:
    """A direct file URL (``https://…/x.gguf``), as opposed to a registry name with a scheme."""
    parts = urlsplit(model)
    return parts.scheme in ("http", "https") and parts.path.lower().endswith(".gguf")


def url_model_name(url: str) -> ModelName:
    """The local name for a URL pull: the file's stem, ``library``, ``latest``."""
    stem = Path(unquote(urlsplit(url).path)).stem
    cleaned = _NAME_CHARS.sub("-", stem).strip("-.") or "model"
    return parse_name(cleaned[:80])


async def pull(
    svc: RegistryService, model: str, *, insecure: bool
) -> AsyncGenerator[Progress, None]:
    try:
        async with contextlib.aclosing(_pull(svc, model, insecure=insecure)) as steps:
            async for p in steps:
                yield p
    finally:
        svc.downloads.sync_committed()  # after the manifest: see power.registry.download


async def _pull(
    svc: RegistryService, model: str, *, insecure: bool
) -> AsyncGenerator[Progress, None]:
    if is_url(model):
        async with contextlib.aclosing(
            _pull_url(svc, model, url_model_name(model), insecure=insecure)
        ) as steps:
            async for p in steps:
                yield p
        return
    target = await asyncio.to_thread(svc.store.resolve, parse_name(model))
    yield {"status": "pulling manifest"}
    try:
        source, raw, manifest = target, *await _fetch_manifest(svc, target, insecure)
    except RegistryError as exc:
        fallback = catalog_sources(svc.catalog, target)
        if not fallback:
            raise
        log.info("pull %s: %s; trying the catalog's %d source(s)", target, exc, len(fallback))
        async with contextlib.aclosing(
            _pull_fallback(svc, target, fallback, exc, insecure=insecure)
        ) as steps:
            async for p in steps:
                yield p
        return
    async with contextlib.aclosing(
        _pull_manifest(svc, target, source, raw, manifest, insecure=insecure)
    ) as steps:
        async for p in steps:
            yield p


async def pull_as(
    svc: RegistryService, source: ModelName, target: ModelName, *, insecure: bool
) -> AsyncGenerator[Progress, None]:
    """Pull ``source`` and store it as ``target`` (a fleet's pull-through): the same verified
    blobs and shared transfers as :func:`pull`, without the catalog's fallbacks."""
    try:
        yield {"status": "pulling manifest"}
        raw, manifest = await _fetch_manifest(svc, source, insecure)
        async with contextlib.aclosing(
            _pull_manifest(svc, target, source, raw, manifest, insecure=insecure)
        ) as steps:
            async for p in steps:
                yield p
    finally:
        svc.downloads.sync_committed()


async def _pull_fallback(
    svc: RegistryService,
    target: ModelName,
    sources: list[str],
    first: RegistryError,
    *,
    insecure: bool,
) -> AsyncGenerator[Progress, None]:
    errors = [str(first)]
    for src in sources:
        try:
            if is_url(src):
                async with contextlib.aclosing(
                    _pull_url(svc, src, target, insecure=insecure)
                ) as steps:
                    async for p in steps:
                        yield p
                return
            name = parse_name(src)
            raw, manifest = await _fetch_manifest(svc, name, insecure)
        except RegistryError as exc:
            log.info("catalog source %s failed: %s", src, exc)
            errors.append(f"{src}: {exc}")
            continue
        async with contextlib.aclosing(
            _pull_manifest(svc, target, name, raw, manifest, insecure=insecure)
        ) as steps:
            async for p in steps:
                yield p
        return
    raise RegistryError("; ".join(errors))


async def _fetch_manifest(
    svc: RegistryService, name: ModelName, insecure: bool
) -> tuple[bytes, mf.Manifest]:
    async with svc.client(name, insecure=insecure) as client:
        try:
            resp = await client.send(
                "GET", client.url(f"manifests/{name.tag}"), headers={"Accept": ACCEPT}
            )
        except RegistryError as exc:
            raise RegistryError(f"pull model manifest: {exc}") from exc
        async with resp:
            if resp.status == 404:
                raise ManifestNotFoundError("pull model manifest: file does not exist")
            if resp.status >= 400:
                raise RegistryError(f"pull model manifest: {await error_text(resp)}")
            with map_errors("pull model manifest"):
                raw = await read_at_most(resp, MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise RegistryError("pull model manifest: manifest too large")
    return raw, _check_manifest(raw)


def _check_manifest(raw: bytes) -> mf.Manifest:
    try:
        manifest = mf.decode_manifest(raw)
        for layer in [manifest.config, *manifest.layers]:
            if layer.size < 0:
                raise ValueError(f"negative size for {layer.digest}")
            if not _DIGEST.match(layer.digest):  # digests name files: no path tricks
                raise ValueError(f"invalid digest {layer.digest!r}")
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, PowerError) as exc:
        raise RegistryError(f"pull model manifest: invalid manifest: {exc}") from exc
    return manifest


async def _pull_manifest(
    svc: RegistryService,
    target: ModelName,
    source: ModelName,
    raw: bytes,
    manifest: mf.Manifest,
    *,
    insecure: bool,
) -> AsyncGenerator[Progress, None]:
    store = svc.store
    layers = [*manifest.layers, manifest.config]
    started: dict[str, Transfer | None] = {}  # None: already in the store

    async def start(layer: mf.Layer) -> None:
        if layer.digest in started:
            return
        if await asyncio.to_thread(store.has_blob, layer.digest):
            started[layer.digest] = None
            return

        async def job(t: Transfer) -> str:
            return await _registry_job(svc, source, layer.digest, t, insecure=insecure)

        started[layer.digest] = svc.downloads.attach(layer.digest, layer.size, job)

    # a blob found present is not removed (its model deleted meanwhile) before the manifest
    # names it
    with store.pinned(x.digest for x in layers):
        followed: set[str] = set()
        try:
            for i, layer in enumerate(layers):
                # The next few blobs download meanwhile (the small ones are done by the time the
                # model is); progress is still reported one layer at a time, in order.
                await start(layer)
                for ahead in layers[i + 1 : i + LAYERS_AHEAD]:
                    if ahead.size <= PREFETCH_MAX:
                        await start(ahead)
                digest, total = layer.digest, layer.size
                status = f"pulling {digest[7:19]}"
                transfer = started[digest]
                if transfer is None or digest in followed:
                    yield {"status": status, "digest": digest, "total": total, "completed": total}
                    continue
                followed.add(digest)
                async with contextlib.aclosing(svc.downloads.follow(transfer)) as updates:
                    async for done in updates:  # closing it promptly lets a lone follower cancel
                        p: Progress = {"status": status, "digest": digest, "total": total}
                        if done:
                            p["completed"] = done
                        yield p
        finally:
            for digest, transfer in started.items():
                if transfer is not None and digest not in followed:  # an earlier layer failed
                    await svc.downloads.leave(transfer, discard=True)
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        old = await asyncio.to_thread(_old_digests, svc, target)
        await asyncio.to_thread(store.write_manifest_bytes, target, raw)
    log.info("pulled %s from %s", target.display, source.full)
    stale = old - {manifest.config.digest, *(x.digest for x in manifest.layers)}
    if stale and not store.noprune:
        yield {"status": "removing unused layers"}
        await asyncio.to_thread(store.remove_unreferenced, stale)
    yield {"status": "success"}


def _old_digests(svc: RegistryService, name: ModelName) -> set[str]:
    try:
        old = mf.decode_manifest(svc.store.read_manifest_bytes(name))
    except (PowerError, msgspec.DecodeError, msgspec.ValidationError, OSError):
        return set()
    return {old.config.digest, *(x.digest for x in old.layers)}


async def _registry_job(
    svc: RegistryService, name: ModelName, digest: str, t: Transfer, *, insecure: bool
) -> str:
    async with svc.client(name, insecure=insecure) as client:
        blob = RegistryBlob(client, digest)
        await blob.resolve()
        final = svc.store.blob_path(digest)
        return await download_blob(
            t,
            blob,
            final.with_name(final.name + "-partial"),
            svc.store.blob_path,
            expected=digest,
            part_min=svc.part_min,
            max_tries=svc.max_tries,
            backoff_s=svc.backoff_s,
        )


async def _pull_url(
    svc: RegistryService, url: str, target: ModelName, *, insecure: bool
) -> AsyncGenerator[Progress, None]:
    if urlsplit(url).scheme == "http" and not insecure:
        raise RegistryError("insecure protocol http")
    key = hashlib.sha256(url.encode()).hexdigest()
    status = f"pulling {key[:12]}"

    async def job(t: Transfer) -> str:
        async with open_session() as session:
            src = UrlSource(session, url)
            await src.resolve()
            t.total = src.total
            return await download_blob(
                t,
                src,
                svc.store.blobs_dir / f"url-{key[:32]}-partial",
                svc.store.blob_path,
                expected=None,
                part_min=svc.part_min,
                max_tries=svc.max_tries,
                backoff_s=svc.backoff_s,
            )

    yield {"status": "pulling manifest"}
    transfer = svc.downloads.attach(f"url:{url}", 0, job)
    async with contextlib.aclosing(svc.downloads.follow(transfer)) as updates:
        async for done in updates:
            p: Progress = {"status": status, "total": transfer.total}
            if done:
                p["completed"] = done
            yield p
    if transfer.task is None:
        raise RuntimeError("transfer was never started")
    digest = transfer.task.result()
    yield {"status": "verifying sha256 digest"}
    filename = Path(unquote(urlsplit(url).path)).name
    steps = await asyncio.to_thread(
        create_model, svc.store, target.full, {"files": {filename: digest}}
    )
    while (step := await asyncio.to_thread(next, steps, None)) is not None:
        yield step
