"""``LocalModel``: everything the rest of the gateway needs to know about one stored model."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import TYPE_CHECKING, Any

import msgspec

from power.errors import PowerError
from power.store import manifest as mf
from power.store.gguf import read_gguf
from power.store.gguf_info import GGUFInfo
from power.store.names import ModelName
from power.template import template_capabilities

if TYPE_CHECKING:
    from power.store.store import ModelStore

__all__ = [
    "Details",
    "LocalModel",
    "ModelEntry",
    "StoredMessage",
    "load_model",
    "model_capabilities",
    "model_entry",
]

log = logging.getLogger(__name__)


class StoredMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A message a model carries (``MESSAGE``; a create request's ``messages``): Ollama's
    ``api.Message``, so content that is not a string is refused when the model is made."""

    role: str
    content: str = ""
    thinking: str = ""
    images: list[str] = msgspec.field(default_factory=list)
    tool_calls: list[dict[str, Any]] = msgspec.field(default_factory=list)
    tool_name: str = ""


def _messages(value: list[Any]) -> list[dict[str, Any]]:
    """The stored messages that are messages (a model made before they were checked may
    carry others: each is left out, with a warning)."""
    kept = []
    for item in value:
        try:
            kept.append(msgspec.to_builtins(msgspec.convert(item, StoredMessage)))
        except msgspec.ValidationError as exc:
            log.warning("ignoring a malformed stored message: %s", exc)
    return kept


class Details(msgspec.Struct, frozen=True, kw_only=True):
    """Ollama's ``details`` object in /api/tags and /api/show."""

    parent_model: str = ""
    format: str = ""
    family: str = ""
    families: list[str] | None = None
    parameter_size: str = ""
    quantization_level: str = ""


class LocalModel(msgspec.Struct, frozen=True, kw_only=True):
    """A resolved model: its manifest's layers read and its GGUF header parsed.

    ``template`` is the TEMPLATE layer (a Go template) or None, in which case the GGUF's own
    Jinja chat template (``gguf.chat_template``) applies.
    """

    name: str
    digest: str
    model_path: str
    adapters: tuple[str, ...] = ()
    projector: str | None = None
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = {}
    messages: list[dict[str, Any]] = []
    license: list[str] = []
    details: Details = Details()
    size: int = 0
    modified_at: float = 0.0
    gguf: GGUFInfo
    capabilities: list[str] = []
    # what ``create`` stored in the config blob; shown by /api/show ("" when unset)
    renderer: str = ""
    parser: str = ""
    requires: str = ""


class ModelEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One row of /api/tags, built from the manifest and config blob only (no GGUF parse)."""

    name: str
    digest: str
    size: int
    modified_at: float
    details: Details


# Go-template variables, e.g. ``.Tools`` or ``$.Tools``, as in Ollama's Template.Vars().
_GO_TOOLS = re.compile(r"\.Tools\b")
_GO_SUFFIX = re.compile(r"\.Suffix\b")
_GO_THINKING = re.compile(r"\.(Thinking|IsThinkSet|Think)\b|<think>")
_JINJA_TOOLS = re.compile(r"\btools\b")
_JINJA_THINKING = re.compile(r"\benable_thinking\b|\breasoning_content\b|<think>")


def model_capabilities(
    gguf: GGUFInfo,
    *,
    template: str | None,
    projector: str | None,
    extra: list[str] | None = None,
) -> list[str]:
    """What a model can do: completion|embedding, then tools, insert, vision, thinking.

    With a TEMPLATE layer the Go template decides tools/insert/thinking; without one the GGUF's
    Jinja chat template does (it is the one that will be rendered).
    """
    caps = ["embedding" if gguf.has_pooling_type else "completion"]
    # The template that will be rendered decides: a TEMPLATE layer, else the GGUF's Jinja one.
    found = template_capabilities(template, None if template is not None else gguf.chat_template)
    tools, insert, thinking = "tools" in found, "insert" in found, "thinking" in found
    if tools:
        caps.append("tools")
    if insert:
        caps.append("insert")
    if projector or f"{gguf.architecture}.vision.block_count" in gguf.metadata:
        caps.append("vision")
    if thinking:
        caps.append("thinking")
    for cap in extra or ():
        if cap not in caps:
            caps.append(cap)
    return caps


def model_entry(store: ModelStore, name: ModelName) -> ModelEntry:
    """The /api/tags row for ``name``: manifest and config blob only."""
    path = store.manifest_path(name)
    raw = path.read_bytes()
    manifest = mf.decode_manifest(raw)
    return ModelEntry(
        name=name.display,
        digest=hashlib.sha256(raw).hexdigest(),
        size=_total_size(manifest),
        modified_at=path.stat().st_mtime,
        details=_details(store.config(manifest), manifest),
    )


def load_model(store: ModelStore, name: ModelName, raw: bytes, mtime: float) -> LocalModel:
    """Read every layer of the manifest ``raw`` and the model's GGUF header."""
    manifest = mf.decode_manifest(raw)
    config = store.config(manifest)
    paths: dict[str, list[str]] = {}
    text: dict[str, str] = {}
    params: dict[str, Any] = {}
    messages: list[dict[str, Any]] = []
    licenses: list[str] = []
    for layer in manifest.layers:
        kind = layer.mediaType
        if kind in (mf.MEDIA_TYPE_MODEL, mf.MEDIA_TYPE_ADAPTER, mf.MEDIA_TYPE_PROJECTOR):
            paths.setdefault(kind, []).append(str(store.blob_path(layer.digest)))
        elif kind in (mf.MEDIA_TYPE_TEMPLATE, mf.MEDIA_TYPE_PROMPT, mf.MEDIA_TYPE_SYSTEM):
            key = "system" if kind == mf.MEDIA_TYPE_SYSTEM else "template"
            text[key] = store.read_blob(layer.digest).decode("utf-8", errors="replace")
        elif kind == mf.MEDIA_TYPE_LICENSE:
            licenses.append(store.read_blob(layer.digest).decode("utf-8", errors="replace"))
        elif kind == mf.MEDIA_TYPE_PARAMS:
            params = _json_blob(store.read_blob(layer.digest), dict)
        elif kind == mf.MEDIA_TYPE_MESSAGES:
            messages = _messages(_json_blob(store.read_blob(layer.digest), list))
        elif kind == mf.MEDIA_TYPE_EMBED:
            log.warning("model %s has a deprecated embed layer; ignored", name.display)
    models = paths.get(mf.MEDIA_TYPE_MODEL)
    if not models:
        raise PowerError(f"model '{name.display}' has no GGUF model layer")
    digest = next(x.digest for x in manifest.layers if x.mediaType == mf.MEDIA_TYPE_MODEL)
    gguf = read_gguf(models[0], cache_key=digest.lower())
    template = text.get("template")
    projector = next(iter(paths.get(mf.MEDIA_TYPE_PROJECTOR, [])), None)
    extra = config.capabilities if isinstance(config.capabilities, list) else None
    return LocalModel(
        name=name.display,
        digest=hashlib.sha256(raw).hexdigest(),
        model_path=models[0],
        adapters=tuple(paths.get(mf.MEDIA_TYPE_ADAPTER, [])),
        projector=projector,
        template=template,
        system=text.get("system"),
        parameters=params,
        messages=messages,
        license=licenses,
        details=_details(config, manifest),
        size=_total_size(manifest),
        modified_at=mtime,
        gguf=gguf,
        capabilities=model_capabilities(gguf, template=template, projector=projector, extra=extra),
        renderer=_text(config.renderer),
        parser=_text(config.parser),
        requires=_text(config.requires),
    )


def _text(value: str | msgspec.UnsetType) -> str:
    return value if isinstance(value, str) else ""


def _total_size(manifest: mf.Manifest) -> int:
    return manifest.config.size + sum(layer.size for layer in manifest.layers)


def _details(config: mf.ConfigV2, manifest: mf.Manifest) -> Details:
    parent = next((x.source for x in manifest.layers if x.mediaType == mf.MEDIA_TYPE_MODEL), "")
    return Details(
        parent_model=parent,
        format=config.model_format,
        family=config.model_family,
        families=config.model_families,
        parameter_size=config.model_type,
        quantization_level=config.file_type,
    )


def _json_blob(raw: bytes, kind: type[Any]) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, kind):
        log.warning("ignoring malformed %s layer", kind.__name__)
        return kind()
    return value
