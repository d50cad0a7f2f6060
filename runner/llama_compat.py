"""What the runner assumes of llama-cpp-python: a tested version, and struct fields that exist.

The runner drives llama-cpp-python's low-level bindings (``_internals`` and the ctypes layouts
of llama.cpp's parameter structs), which change between releases without notice. So:

- ``check_version`` runs before anything of llama-cpp-python is imported: a version outside the
  tested range is a clear start-up error, not a crash inside a changed struct layout.
- ``set_fields`` is the one way the runner writes a parameter struct. A ctypes ``Structure``
  accepts any attribute name silently (``params.use_mmap = True`` on a struct without that
  field just sets a Python attribute and llama.cpp never sees it), so a name the struct does
  not have is refused, naming the field and the installed version.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Sequence
from importlib import metadata
from typing import Any, Protocol

__all__ = [
    "DISTRIBUTION",
    "TESTED_VERSIONS",
    "BatchItem",
    "UnsupportedEngineError",
    "check_version",
    "fill_batch",
    "installed_version",
    "set_fields",
]

DISTRIBUTION = "llama-cpp-python"
# Releases the runner is tested with (pyproject pins the same). Widen it only after the whole
# test suite has passed against the new release.
TESTED_VERSIONS = ("0.3.36",)


class UnsupportedEngineError(RuntimeError):
    """llama-cpp-python is missing, of an untested version, or lacks a field the runner sets."""


def installed_version() -> str:
    """The installed llama-cpp-python's version, read from its metadata (nothing imported)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise UnsupportedEngineError(
            f"{DISTRIBUTION} is not installed; install A3S Power's pinned version"
            f" ({DISTRIBUTION}=={TESTED_VERSIONS[-1]})"
        ) from None


def check_version(version: str) -> None:
    """Refuse a llama-cpp-python release the runner was not tested with."""
    if version not in TESTED_VERSIONS:
        tested = ", ".join(TESTED_VERSIONS)
        raise UnsupportedEngineError(
            f"{DISTRIBUTION} {version} is installed, but this runner is tested only with"
            f" {tested}; install {DISTRIBUTION}=={TESTED_VERSIONS[-1]}"
        )


def _field_names(kind: type[ctypes.Structure]) -> frozenset[str]:
    names: set[str] = set()
    for klass in kind.__mro__:
        for field in klass.__dict__.get("_fields_", ()):
            names.add(field[0])
    return frozenset(names)


def set_fields(struct: ctypes.Structure, **values: object) -> None:
    """Write ``values`` into ``struct``; ``UnsupportedEngineError`` for a field it lacks."""
    names = _field_names(type(struct))
    for name in values:
        if name not in names:
            raise UnsupportedEngineError(
                f"{type(struct).__name__} has no field {name!r} in {DISTRIBUTION}"
                f" {_version_or_unknown()} (tested: {', '.join(TESTED_VERSIONS)})"
            )
    for name, value in values.items():
        setattr(struct, name, value)


def _version_or_unknown() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "(not installed)"


class BatchItem(Protocol):
    """A run of one sequence's tokens from ``pos`` on (a prompt chunk, an embedding part)."""

    @property
    def seq(self) -> int: ...

    @property
    def pos(self) -> int: ...

    @property
    def tokens(self) -> Sequence[int]: ...


def fill_batch(batch: Any, items: Iterable[BatchItem], *, every_row: bool) -> int:
    """Lay ``items`` out in a ``llama_batch``, one sequence id per token; rows ask for output
    when ``every_row`` (embeddings), else only an item's last row when it says ``logits``.
    Returns how many tokens were written (also set as ``n_tokens``)."""
    token, pos, n_seq, seq_id, logits = (
        batch.token, batch.pos, batch.n_seq_id, batch.seq_id, batch.logits,
    )  # fmt: skip
    flag = int(every_row)
    i = 0
    for item in items:
        seq = item.seq
        p = item.pos
        for t in item.tokens:
            token[i] = t
            pos[i] = p
            n_seq[i] = 1
            seq_id[i][0] = seq
            logits[i] = flag
            i += 1
            p += 1
        if getattr(item, "logits", False):
            logits[i - 1] = 1
    batch.n_tokens = i
    return i
