"""Tiny GGUF files for tests that need a model file but never its weights."""

from __future__ import annotations

import struct
from pathlib import Path

__all__ = ["JINJA", "TOKENS", "tiny_gguf"]

JINJA = "{% for m in messages %}{{ m.content }}{% endfor %}"
TOKENS = ["<unk>", "<s>", "</s>", "a", "b", "c"]


def tiny_gguf(path: Path) -> Path:
    """A header-only GGUF with a 6-entry token list and two tensors."""

    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text.encode())) + text.encode()

    kv: list[bytes] = [
        s("general.architecture") + struct.pack("<I", 8) + s("llama"),
        s("general.name") + struct.pack("<I", 8) + s("tiny"),
        s("general.file_type") + struct.pack("<II", 4, 2),
        s("llama.context_length") + struct.pack("<II", 4, 4096),
        s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 6) + b"".join(map(s, TOKENS)),
        s("tokenizer.ggml.scores") + struct.pack("<IIQ3f", 9, 6, 3, 0.0, 1.0, 2.0),
        s("tokenizer.chat_template") + struct.pack("<I", 8) + s(JINJA),
    ]
    tensors = [
        s(name) + struct.pack("<IQQIQ", 2, 8, 6, 2, 0) for name in ("token_embd.weight", "output")
    ]
    path.write_bytes(
        b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv + tensors)
    )
    return path
