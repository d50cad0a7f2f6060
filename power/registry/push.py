"""Push: the OCI upload flow, layer by layer, then the manifest.

Per blob: ``HEAD`` (already there: done); ``POST …/blobs/uploads/`` (with ``?mount=&from=``
when the layer came from another repository on the same registry: a 201 means mounted);
``PATCH`` parts with ``Content-Range: <start>-<end>`` following each ``Location``; ``PUT
…?digest=``. A 307 answer to a PATCH sends that part's bytes to the redirect target instead.
Finally ``PUT …/manifests/<tag>`` with the local manifest bytes, so a pull gets them verbatim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from power.errors import ModelNotFoundError, RegistryError
from power.registry.client import RegistryClient, error_text, map_errors
from power.registry.parts import MAX_PARTS, PART_MAX
from power.registry.proxy import proxy_for
from power.registry.service import RegistryService
from power.store import manifest as mf
from power.store.names import ModelName, parse_name

__all__ = ["push"]

log = logging.getLogger(__name__)

Progress = dict[str, Any]
_READ = 1 << 20


async def push(
    svc: RegistryService, model: str, *, insecure: bool
) -> AsyncGenerator[Progress, None]:
    name = await asyncio.to_thread(svc.store.resolve, parse_name(model))
    yield {"status": "retrieving manifest"}
    try:
        raw = await asyncio.to_thread(svc.store.read_manifest_bytes, name)
    except ModelNotFoundError:
        yield {"status": "couldn't retrieve manifest"}
        raise
    manifest = mf.decode_manifest(raw)
    async with svc.client(name, insecure=insecure) as client:
        for layer in [*manifest.layers, manifest.config]:
            async with contextlib.aclosing(_push_blob(svc, client, name, layer)) as steps:
                async for p in steps:
                    yield p
        yield {"status": "pushing manifest"}
        resp = await client.send(
            "PUT",
            client.url(f"manifests/{name.tag}"),
            headers={"Content-Type": manifest.mediaType or mf.MEDIA_TYPE_MANIFEST},
            body=raw,
        )
        async with resp:
            if resp.status >= 300:
                raise RegistryError(f"push manifest: {await error_text(resp)}")
    log.info("pushed %s", name.full)
    yield {"status": "success"}


def _mount_source(layer: mf.Layer, target: ModelName) -> str:
    """``namespace/model`` of the layer's source repository when it is on the same registry."""
    if not layer.source:
        return ""
    src = ModelName.parse(layer.source)
    if not src.is_valid() or src.host.lower() != target.host.lower():
        return ""
    repo = f"{src.namespace}/{src.model}"
    return "" if repo.lower() == f"{target.namespace}/{target.model}".lower() else repo


async def _push_blob(
    svc: RegistryService, client: RegistryClient, name: ModelName, layer: mf.Layer
) -> AsyncGenerator[Progress, None]:
    digest, total = layer.digest, layer.size
    status = f"pushing {digest[7:19]}"
    done: Progress = {"status": status, "digest": digest, "total": total, "completed": total}
    async with await client.send("HEAD", client.url(f"blobs/{digest}")) as resp:
        if resp.status == 200:
            yield done
            return
    url = client.url("blobs/uploads/")
    mount = _mount_source(layer, name)
    if mount:
        url += "?" + urlencode({"mount": digest, "from": mount})
    async with await client.send("POST", url) as resp:
        if resp.status == 201:
            yield done
            return
        if resp.status != 202:
            raise RegistryError(f"push {digest}: start upload: {await error_text(resp)}")
        location = _location(client, resp, url)
    path = await asyncio.to_thread(svc.store.blob_path, digest)
    size = min(max(math.ceil(total / MAX_PARTS), svc.part_min), PART_MAX)
    sent = [0]
    yield {"status": status, "digest": digest, "total": total}
    for start in range(0, total, size):
        end = min(start + size, total) - 1
        # owned here: reported on while it runs, cancelled and awaited if we stop early
        part = asyncio.ensure_future(_patch(client, location, path, start, end, sent))
        try:
            while not part.done():
                await asyncio.wait({part}, timeout=0.1)
                p: Progress = {"status": status, "digest": digest, "total": total}
                if sent[0]:
                    p["completed"] = sent[0]
                yield p
        finally:
            if not part.done():
                part.cancel()
                await asyncio.wait({part})
        location = part.result()
    sep = "&" if "?" in location else "?"
    commit = f"{location}{sep}{urlencode({'digest': digest})}"
    async with await client.send("PUT", commit, headers={"Content-Length": "0"}) as resp:
        if resp.status >= 300:
            raise RegistryError(f"push {digest}: commit upload: {await error_text(resp)}")
    yield done


def _location(client: RegistryClient, resp: aiohttp.ClientResponse, url: str) -> str:
    loc = resp.headers.get("Docker-Upload-Location") or resp.headers.get("Location")
    if not loc:
        raise RegistryError(f"push: registry sent no upload location for {url}")
    return client.resolve(loc, url)


def _reader(path: Path, start: int, end: int, sent: list[int]) -> Any:
    async def chunks() -> AsyncIterator[bytes]:
        with path.open("rb") as f:
            await asyncio.to_thread(f.seek, start)
            left = end - start + 1
            while left > 0:
                chunk = await asyncio.to_thread(f.read, min(_READ, left))
                if not chunk:
                    raise RegistryError(f"push: {path.name} is shorter than its manifest says")
                left -= len(chunk)
                sent[0] += len(chunk)
                yield chunk

    return chunks


async def _patch(
    client: RegistryClient, location: str, path: Path, start: int, end: int, sent: list[int]
) -> str:
    """Send bytes ``start..end`` (inclusive); returns the next upload URL."""
    before = sent[0]
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(end - start + 1),
        "Content-Range": f"{start}-{end}",
        "X-Redirect-Uploads": "1",
    }
    body = _reader(path, start, end, sent)
    resp = await client.send("PATCH", location, headers=headers, body=body, allow_redirects=False)
    async with resp:
        if resp.status == 307 and "Location" in resp.headers:
            sent[0] = before
            target = client.resolve(resp.headers["Location"], location)
            with map_errors(f"PUT {target}"):
                async with client.session.put(
                    target, data=body(), headers={"Content-Length": headers["Content-Length"]},
                    proxy=proxy_for(target),
                ) as put:  # fmt: skip
                    if put.status >= 300:
                        raise RegistryError(f"push: upload part: {await error_text(put)}")
            return location
        if resp.status >= 300:
            raise RegistryError(f"push: upload part: {await error_text(resp)}")
        return _location(client, resp, location)
