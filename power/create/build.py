"""Model creation: Ollama's structured ``/api/create`` (and the older ``modelfile`` form).

:func:`create_model` validates the request eagerly, raising before anything is written, and
returns an iterator of progress dicts (``{"status": ...}``) that does the work as it is consumed.

The request and its checks live in :mod:`power.create.request`: names and blob digests only, as
Ollama's server takes; the server never opens a path a client sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from power.create.quantize import SOURCE_TYPES, quantize
from power.create.request import CreateRequest, check_files, prepare, storable
from power.errors import InvalidRequestError, ModelNotFoundError
from power.store import manifest as mf
from power.store.gguf import read_gguf
from power.store.gguf_info import GGUFInfo
from power.store.names import ModelName, parse_name

if TYPE_CHECKING:
    from power.store.store import ModelStore

__all__ = ["CreateRequest", "base_to_pull", "create_model"]

log = logging.getLogger(__name__)

Progress = dict[str, Any]


def base_to_pull(store: ModelStore, req: CreateRequest | Mapping[str, Any]) -> str | None:
    """The ``from`` of ``req`` when it names a model that is not in the store (to be pulled).

    Raises the request's 400s first, so a bad request never pulls.
    """
    source = prepare(req).from_
    if not source or source.startswith("sha256"):
        return None
    try:
        store.get(source)
    except ModelNotFoundError:
        return source
    return None


def create_model(
    store: ModelStore,
    name: str,
    req: CreateRequest | Mapping[str, Any],
    *,
    pull_base: bool = False,
) -> Iterator[Progress]:
    """Validate ``req`` now (raising PowerError subclasses) and return the progress iterator.

    ``pull_base``: the base model is pulled before the iterator runs, so it need not exist yet.
    """
    r = prepare(req)  # 400 before anything is written
    target = storable(store.resolve(parse_name(name or r.model or r.name)))
    check_files(r.files or {}, store)
    if not r.from_ and not r.files:
        raise InvalidRequestError("neither 'from' or 'files' was specified")
    if r.from_.startswith("sha256"):
        if not store.has_blob(r.from_):
            raise InvalidRequestError(f"blob not found (digest {r.from_})")
    elif r.from_ and not pull_base:
        store.get(r.from_)  # 404 now, before the stream starts
    for filename, digest in (r.adapters or {}).items():
        if not store.has_blob(digest):
            raise InvalidRequestError(f"blob not found for {filename} (digest {digest})")
    return _Builder(store, target, r).run()


class _Builder:
    """Collects layers and config for one create, then writes the manifest."""

    def __init__(self, store: ModelStore, target: ModelName, req: CreateRequest) -> None:
        self.store = store
        self.target = target
        self.req = req
        self.layers: list[mf.Layer] = []
        self.config = mf.ConfigV2()
        self._pin: Callable[[str], None] = lambda digest: None  # (set by `run`)

    def run(self) -> Iterator[Progress]:
        r = self.req
        named = [*(r.files or {}).values(), *(r.adapters or {}).values()]
        if r.from_.startswith("sha256"):
            named.append(r.from_)
        # Every blob it uses stays until its manifest names it, whatever is deleted meanwhile:
        # those named here from the start, a base's as its manifest is read, and each blob it
        # stores from just before it is written (it may be a layer of a model being deleted).
        with self.store.pinned(self.store.normalize_digest(d) for d in named) as self._pin:
            if r.from_:
                yield from self._from(r.from_)
            for filename in sorted(r.files or {}):  # with `from`: more layers, e.g. a projector
                yield from self._gguf_layer((r.files or {})[filename], filename)
            if r.quantize:
                yield from self._quantize(r.quantize)
            yield from self._modifiers()
            yield from self._write()

    # -- base layers ---------------------------------------------------------------------------

    def _from(self, source: str) -> Iterator[Progress]:
        if source.startswith("sha256"):
            yield from self._gguf_layer(source, "")
        else:
            yield from self._inherit(source)

    def _inherit(self, source: str) -> Iterator[Progress]:
        base = self.store.get(source)
        manifest = self.store.pinned_manifest(base.name, self._pin)  # all, before any yield
        self.config = self.store.config(manifest)
        for layer in manifest.layers:
            yield {"status": f"using existing layer {layer.digest}"}
            self.layers.append(msgspec.structs.replace(layer, from_=base.name))

    def _gguf_layer(
        self,
        digest: str,
        filename: str,
        *,
        announce: bool = True,
        created: bool = False,
    ) -> Iterator[Progress]:
        if announce:
            yield {"status": "parsing GGUF"}
        digest = self.store.normalize_digest(digest)
        if not self.store.has_blob(digest):
            raise InvalidRequestError(f"blob not found (digest {digest})")
        info = read_gguf(self.store.blob_path(digest), cache_key=digest)
        kind = _gguf_media_type(info)
        verb = "creating new" if created else "using existing"
        yield {"status": f"{verb} layer {digest}"}
        size = self.store.blob_path(digest).stat().st_size
        layer = mf.Layer(mediaType=kind, digest=digest, size=size)
        if filename:
            layer = msgspec.structs.replace(layer, from_=filename)
        self.layers.append(layer)
        if kind == mf.MEDIA_TYPE_MODEL:
            self._configure(info)

    def _configure(self, info: GGUFInfo) -> None:
        families = list(self.config.model_families or [])
        if info.architecture not in families:
            families.append(info.architecture)
        self.config = msgspec.structs.replace(
            self.config,
            model_format=self.config.model_format or "gguf",
            model_family=self.config.model_family or info.architecture,
            model_families=families,
            model_type=self.config.model_type or info.parameter_size,
            file_type=self.config.file_type or info.file_type,
        )

    def _quantize(self, qtype: str) -> Iterator[Progress]:
        """Replace the model layer by its quantized version (llama.cpp, in a child process)."""
        index = next(
            (i for i, x in enumerate(self.layers) if x.mediaType == mf.MEDIA_TYPE_MODEL), None
        )
        if index is None:
            raise InvalidRequestError("no model layer to quantize")
        layer = self.layers[index]
        src = self.store.blob_path(layer.digest)
        kind = read_gguf(src, cache_key=layer.digest).file_type.upper()
        if kind not in SOURCE_TYPES:
            raise InvalidRequestError(
                f"quantization is only supported for F16, BF16 and F32 models, not {kind}"
            )
        status = f"quantizing {kind} model to {qtype}"
        tmp = self.store.tmp_dir / f".tmp-quantize-{layer.digest[7:19]}-{id(self):x}"
        try:
            yield {"status": status, "digest": "0000000000000000000", "total": layer.size}
            for done, total in quantize(src, tmp, qtype):
                completed = layer.size * done // max(total, 1)
                yield {
                    "status": status,
                    "digest": "0000000000000000000",
                    "total": layer.size,
                    "completed": completed,
                }
            yield {"status": "verifying conversion"}
            info = read_gguf(tmp)
            digest, created = self.store.adopt_blob(tmp, pin=self._pin)
        finally:
            tmp.unlink(missing_ok=True)
        verb = "creating new" if created else "using existing"
        yield {"status": f"{verb} layer {digest}"}
        size = self.store.blob_path(digest).stat().st_size
        self.layers[index] = mf.Layer(mediaType=mf.MEDIA_TYPE_MODEL, digest=digest, size=size)
        self.config = msgspec.structs.replace(self.config, file_type=info.file_type)

    # -- template, system, parameters, ... -----------------------------------------------------

    def _add(self, media_type: str, data: bytes, *, replace: tuple[str, ...] = ()) -> Progress:
        """Store ``data`` as a layer, first dropping layers of the media types in ``replace``."""
        digest = mf.sha256_digest(data)
        existed = self.store.has_blob(digest)
        self._pin(digest)
        self.store.add_blob_bytes(data)
        self.layers = [x for x in self.layers if x.mediaType not in replace]
        self.layers.append(mf.Layer(mediaType=media_type, digest=digest, size=len(data)))
        verb = "using existing" if existed else "creating new"
        return {"status": f"{verb} layer {digest}"}

    def _modifiers(self) -> Iterator[Progress]:
        r = self.req
        for filename, source in sorted((r.adapters or {}).items()):
            yield from self._adapter(filename, source)
        if r.template:
            drop = (mf.MEDIA_TYPE_TEMPLATE, mf.MEDIA_TYPE_PROMPT)
            yield self._add(mf.MEDIA_TYPE_TEMPLATE, r.template.encode(), replace=drop)
        if r.system:
            yield self._add(
                mf.MEDIA_TYPE_SYSTEM, r.system.encode(), replace=(mf.MEDIA_TYPE_SYSTEM,)
            )
        licenses = [r.license] if isinstance(r.license, str) else list(r.license or [])
        have = {x.digest for x in self.layers if x.mediaType == mf.MEDIA_TYPE_LICENSE}
        for text in licenses:
            if mf.sha256_digest(text.encode()) not in have:
                yield self._add(mf.MEDIA_TYPE_LICENSE, text.encode())
        if r.parameters:
            merged = {**self._inherited_params(), **r.parameters}
            data = mf.encode_json_value(merged)
            yield self._add(mf.MEDIA_TYPE_PARAMS, data, replace=(mf.MEDIA_TYPE_PARAMS,))
        if r.messages is not None:
            data = mf.encode_json_value(msgspec.to_builtins(r.messages))
            yield self._add(mf.MEDIA_TYPE_MESSAGES, data, replace=(mf.MEDIA_TYPE_MESSAGES,))
        extra = {k: v for k in ("renderer", "parser", "requires") if (v := getattr(r, k))}
        if extra:
            self.config = msgspec.structs.replace(self.config, **extra)

    def _adapter(self, filename: str, source: str) -> Iterator[Progress]:
        digest = self.store.normalize_digest(source)
        if not self.store.has_blob(digest):
            raise InvalidRequestError(f"blob not found for {filename} (digest {digest})")
        kind = read_gguf(self.store.blob_path(digest), cache_key=digest).metadata.get(
            "general.type"
        )
        if kind != "adapter":  # (llama.cpp loads nothing else as one, at every later load)
            raise InvalidRequestError(
                f"{filename} is not a LoRA adapter: its general.type is {kind!r}, not 'adapter'"
            )
        yield {"status": f"using existing layer {digest}"}
        self.layers = [x for x in self.layers if x.mediaType != mf.MEDIA_TYPE_ADAPTER]
        size = self.store.blob_path(digest).stat().st_size
        self.layers.append(mf.Layer(mediaType=mf.MEDIA_TYPE_ADAPTER, digest=digest, size=size))

    def _inherited_params(self) -> dict[str, Any]:
        for layer in self.layers:
            if layer.mediaType == mf.MEDIA_TYPE_PARAMS:
                try:
                    value = msgspec.json.decode(self.store.read_blob(layer.digest))
                except (OSError, msgspec.DecodeError):
                    return {}
                return value if isinstance(value, dict) else {}
        return {}

    # -- manifest ------------------------------------------------------------------------------

    def _write(self) -> Iterator[Progress]:
        if not any(x.mediaType == mf.MEDIA_TYPE_MODEL for x in self.layers):
            raise InvalidRequestError("no model layer: 'from' or 'files' must name a GGUF model")
        config_bytes = mf.encode_go_json(self.config)
        config_digest = mf.sha256_digest(config_bytes)
        self._pin(config_digest)
        self.store.add_blob_bytes(config_bytes)
        size = len(config_bytes)
        config = mf.Layer(mediaType=mf.MEDIA_TYPE_CONFIG, digest=config_digest, size=size)
        old = _old_digests(self.store, self.target)
        yield {"status": "writing manifest"}
        self.store.write_manifest(self.target, mf.Manifest(config=config, layers=self.layers))
        if old:
            self.store.remove_unreferenced(old)
        log.info("created model %s", self.target.display)
        yield {"status": "success"}


def _gguf_media_type(info: GGUFInfo) -> str:
    kind = info.metadata.get("general.type")
    if kind == "adapter":
        raise InvalidRequestError("LoRA adapters must be passed as 'adapters', not as a model")
    if kind in ("projector", "mmproj") or info.architecture == "clip":
        return mf.MEDIA_TYPE_PROJECTOR
    return mf.MEDIA_TYPE_MODEL


def _old_digests(store: ModelStore, name: ModelName) -> set[str]:
    """What the manifest being replaced references (pruned afterwards if now unused)."""
    try:
        old = mf.decode_manifest(store.read_manifest_bytes(name))
    except (ModelNotFoundError, msgspec.DecodeError, OSError):
        return set()
    return {old.config.digest, *(x.digest for x in old.layers)}
