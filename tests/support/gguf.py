"""Tiny GGUF files for tests that need a model file but never its weights."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["JINJA", "TOKENS", "tiny_gguf"]

JINJA = "{% for m in messages %}{{ m.content }}{% endfor %}"
TOKENS = ["<unk>", "<s>", "</s>", "a", "b", "c"]

# quantization -> (general.file_type, the ggml type of its tensors)
_QUANTS = {"Q4_0": (2, 2), "Q8_0": (7, 8)}
_U32, _F32, _STR, _ARR = 4, 6, 8, 9


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, value: str | int | list[str] | list[float]) -> bytes:
    if isinstance(value, str):
        return _s(key) + struct.pack("<I", _STR) + _s(value)
    if isinstance(value, int):
        return _s(key) + struct.pack("<II", _U32, value)
    if all(isinstance(v, str) for v in value):
        items = b"".join(_s(v) for v in value)  # type: ignore[arg-type]
        return _s(key) + struct.pack("<IIQ", _ARR, _STR, len(value)) + items
    floats = struct.pack(f"<{len(value)}f", *value)
    return _s(key) + struct.pack("<IIQ", _ARR, _F32, len(value)) + floats


def tiny_gguf(
    path: Path,
    *,
    arch: str = "llama",
    quant: str = "Q4_0",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """A header-only GGUF: ``arch``, the 6-entry token list ``TOKENS``, three scores, the chat
    template ``JINJA``, and two 8x6 tensors of ``quant`` (96 parameters); ``extra`` adds or
    replaces metadata (str, uint32, or a list of str or float)."""
    file_type, tensor_type = _QUANTS[quant]
    kv: dict[str, Any] = {
        "general.architecture": arch,
        "general.name": "tiny",
        "general.file_type": file_type,
        f"{arch}.context_length": 4096,
        "tokenizer.ggml.tokens": TOKENS,
        "tokenizer.ggml.scores": [0.0, 1.0, 2.0],
        "tokenizer.chat_template": JINJA,
        **(extra or {}),
    }
    tensors = [
        _s(name) + struct.pack("<IQQIQ", 2, 8, 6, tensor_type, 0)
        for name in ("token_embd.weight", "output")
    ]
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    path.write_bytes(head + b"".join(_kv(k, v) for k, v in kv.items()) + b"".join(tensors))
    return path
