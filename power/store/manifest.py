"""Manifest and config-blob Structs, encoded the way Ollama's Go code encodes them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType, field

__all__ = [
    "MEDIA_TYPE_ADAPTER",
    "MEDIA_TYPE_CONFIG",
    "MEDIA_TYPE_EMBED",
    "MEDIA_TYPE_LICENSE",
    "MEDIA_TYPE_MANIFEST",
    "MEDIA_TYPE_MESSAGES",
    "MEDIA_TYPE_MODEL",
    "MEDIA_TYPE_PARAMS",
    "MEDIA_TYPE_PROJECTOR",
    "MEDIA_TYPE_PROMPT",
    "MEDIA_TYPE_SYSTEM",
    "MEDIA_TYPE_TEMPLATE",
    "ConfigV2",
    "Layer",
    "Manifest",
    "decode_config",
    "decode_manifest",
    "encode_go_json",
    "encode_json_value",
    "sha256_digest",
]

MEDIA_TYPE_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_MODEL = "application/vnd.ollama.image.model"
MEDIA_TYPE_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_TYPE_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_TYPE_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_TYPE_PROMPT = "application/vnd.ollama.image.prompt"  # legacy name for template
MEDIA_TYPE_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_TYPE_PARAMS = "application/vnd.ollama.image.params"
MEDIA_TYPE_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_TYPE_LICENSE = "application/vnd.ollama.image.license"
MEDIA_TYPE_EMBED = "application/vnd.ollama.image.embed"  # deprecated, ignored


class Layer(msgspec.Struct, frozen=True, kw_only=True):
    """One manifest entry. ``from_`` is the source model or file name (JSON ``from``)."""

    mediaType: str
    digest: str
    size: int
    from_: str | UnsetType = field(name="from", default=UNSET)
    name: str | UnsetType = UNSET

    @property
    def source(self) -> str:
        """``from`` as a plain string ("" when absent)."""
        return self.from_ if isinstance(self.from_, str) else ""


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    schemaVersion: int = 2
    mediaType: str = MEDIA_TYPE_MANIFEST
    config: Layer
    layers: list[Layer] = []


class ConfigV2(msgspec.Struct, frozen=True, kw_only=True):
    """The config blob. Optional keys are omitted while UNSET; unknown keys (rootfs) are ignored."""

    model_format: str = ""
    model_family: str = ""
    model_families: list[str] | None = None
    model_type: str = ""
    file_type: str = ""
    renderer: str | UnsetType = UNSET
    parser: str | UnsetType = UNSET
    requires: str | UnsetType = UNSET
    remote_host: str | UnsetType = UNSET
    remote_model: str | UnsetType = UNSET
    capabilities: list[str] | UnsetType = UNSET
    context_length: int | UnsetType = UNSET
    embedding_length: int | UnsetType = UNSET
    base_name: str | UnsetType = UNSET
    architecture: str = "amd64"
    os: str = "linux"


_manifest_decoder = msgspec.json.Decoder(Manifest)
_config_decoder = msgspec.json.Decoder(ConfigV2)
_encoder = msgspec.json.Encoder()

# Go's encoding/json escapes these inside strings; they can only appear inside strings.
_GO_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def _go_escape(raw: bytes) -> bytes:
    for needle, repl in _GO_ESCAPES:
        if needle in raw:
            raw = raw.replace(needle, repl)
    return raw


def encode_go_json(obj: msgspec.Struct) -> bytes:
    """Compact JSON with Go's HTML escaping and a trailing newline (``json.Encoder.Encode``)."""
    return _go_escape(_encoder.encode(obj)) + b"\n"


def encode_json_value(value: Any) -> bytes:
    """Encode a plain JSON value like Go: map keys sorted, HTML-escaped, newline-terminated."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _go_escape(text.encode()) + b"\n"


def decode_manifest(raw: bytes) -> Manifest:
    return _manifest_decoder.decode(raw)


def decode_config(raw: bytes) -> ConfigV2:
    return _config_decoder.decode(raw)


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
