"""Model names, parsed exactly as Ollama parses them.

A reference has up to four parts, ``[host/][namespace/]model[:tag]``, read right to left:

1. a ``:`` after the last ``/`` starts the tag;
2. the last ``/`` separates the model;
3. the next ``/`` separates the namespace, so a two-part name is always ``namespace/model``;
4. what is left is the host, optionally prefixed by ``scheme://``.

A separator with nothing on one side yields :data:`MISSING_PART`, which never validates.
Missing parts are filled from the defaults ``registry.ollama.ai`` / ``library`` / ``latest``.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from power.errors import InvalidRequestError

MAX_PART_BYTES = 255  # each part is one folder (or file) under manifests/

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_NAMESPACE",
    "DEFAULT_SCHEME",
    "DEFAULT_TAG",
    "MISSING_PART",
    "ModelName",
    "parse_name",
]

MISSING_PART = "!MISSING!"
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
DEFAULT_SCHEME = "https"

_MAX_HOST_LEN = 350
_MAX_PART_LEN = 80
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
# Characters allowed after the first one, per part.
_HOST_REST = _WORD | frozenset("-.:")
_NAMESPACE_REST = _WORD | frozenset("-")
_MODEL_REST = _WORD | frozenset("-.")


def _valid_part(s: str, rest: frozenset[str], max_len: int) -> bool:
    if not 1 <= len(s) <= max_len or s[0] not in _WORD:
        return False
    return all(c in rest for c in s[1:])


def _cut_promised(s: str, sep: str) -> tuple[str, str, bool]:
    before, found, after = s.rpartition(sep)
    if not found:
        return s, "", False
    return before or MISSING_PART, after or MISSING_PART, True


class ModelName(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed name. Case is preserved; equality ignores case on all four parts."""

    host: str = ""
    namespace: str = ""
    model: str = ""
    tag: str = ""
    scheme: str = ""

    @classmethod
    def parse(cls, s: str) -> ModelName:
        """Parse ``s`` and fill missing parts from the defaults. The result may be invalid."""
        bare = cls.parse_bare(s)
        return ModelName(
            host=bare.host or DEFAULT_HOST,
            namespace=bare.namespace or DEFAULT_NAMESPACE,
            model=bare.model,
            tag=bare.tag or DEFAULT_TAG,
            scheme=bare.scheme or DEFAULT_SCHEME,
        )

    @classmethod
    def parse_bare(cls, s: str) -> ModelName:
        """Parse ``s`` without filling defaults (Ollama's ``ParseNameBare``)."""
        tag = ""
        if s.rfind(":") > s.rfind("/"):
            s, tag, _ = _cut_promised(s, ":")
        s, model, promised = _cut_promised(s, "/")
        if not promised:
            return ModelName(model=s, tag=tag)
        s, namespace, promised = _cut_promised(s, "/")
        if not promised:
            return ModelName(namespace=s, model=model, tag=tag)
        scheme, sep, host = s.partition("://")
        if not sep:
            scheme, host = "", scheme
        return ModelName(host=host, namespace=namespace, model=model, tag=tag, scheme=scheme)

    @classmethod
    def from_parts(cls, parts: tuple[str, ...] | list[str]) -> ModelName | None:
        """A name from ``(host, namespace, model, tag)`` (a manifest path); None if invalid."""
        if len(parts) != 4:
            return None
        name = ModelName(host=parts[0], namespace=parts[1], model=parts[2], tag=parts[3])
        return name if name.is_valid() else None

    def is_valid(self) -> bool:
        """True when all four parts are present and pass the character and length rules."""
        return (
            _valid_part(self.host, _HOST_REST, _MAX_HOST_LEN)
            and _valid_part(self.namespace, _NAMESPACE_REST, _MAX_PART_LEN)
            and _valid_part(self.model, _MODEL_REST, _MAX_PART_LEN)
            and _valid_part(self.tag, _MODEL_REST, _MAX_PART_LEN)
        )

    @property
    def display(self) -> str:
        """The shortest form: default host and namespace dropped, the tag always shown."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def full(self) -> str:
        """``host/namespace/model:tag``."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def parts(self) -> tuple[str, str, str, str]:
        """The four path parts under ``manifests/``: host, namespace, model, tag."""
        return (self.host, self.namespace, self.model, self.tag)

    def filepath(self) -> Path:
        """The relative manifest path ``host/namespace/model/tag``; a 400 unless the name is
        valid and each part fits in one file name (a valid host may be longer than that)."""
        if not self.is_valid():
            raise InvalidRequestError("invalid model name")
        if any(len(part.encode()) > MAX_PART_BYTES for part in self.parts):
            raise InvalidRequestError(
                f"invalid model name: a part is longer than {MAX_PART_BYTES} bytes"
            )
        return Path(*self.parts)

    def key(self) -> tuple[str, str, str, str]:
        """A case-folded key for dictionaries and comparisons."""
        return (
            self.host.lower(),
            self.namespace.lower(),
            self.model.lower(),
            self.tag.lower(),
        )

    def equal_fold(self, other: ModelName) -> bool:
        return self.key() == other.key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelName):
            return NotImplemented
        return self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __str__(self) -> str:
        return self.display


def parse_name(s: str) -> ModelName:
    """Parse ``s`` or raise ``InvalidRequestError("invalid model name")``."""
    name = ModelName.parse(s)
    if not name.is_valid():
        raise InvalidRequestError("invalid model name")
    return name
