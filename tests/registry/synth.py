"""A tiny llama-architecture GGUF with real F32/F16 weights, written from scratch.

Big enough to split into several download parts, small enough to be fast, and a valid input
for llama.cpp's quantizer (which wants an F16/BF16/F32 source).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_ALIGN = 32
_U32, _F32, _STR, _ARR, _U64 = 4, 6, 8, 9, 10
_GGML = {"f32": (0, np.float32), "f16": (1, np.float16)}
_FILE_TYPE = {"f32": 0, "f16": 1}


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _kv_u32(key: str, value: int) -> bytes:
    return _s(key) + struct.pack("<II", _U32, value)


def _kv_f32(key: str, value: float) -> bytes:
    return _s(key) + struct.pack("<If", _F32, value)


def _kv_str(key: str, value: str) -> bytes:
    return _s(key) + struct.pack("<I", _STR) + _s(value)


def _kv_strs(key: str, values: list[str]) -> bytes:
    return _s(key) + struct.pack("<IIQ", _ARR, _STR, len(values)) + b"".join(map(_s, values))


def _kv_f32s(key: str, values: list[float]) -> bytes:
    head = struct.pack("<IIQ", _ARR, _F32, len(values))
    return _s(key) + head + struct.pack(f"<{len(values)}f", *values)


def _kv_u32s(key: str, values: list[int]) -> bytes:
    head = struct.pack("<IIQ", _ARR, _U32, len(values))
    return _s(key) + head + struct.pack(f"<{len(values)}I", *values)


def write_llama_gguf(
    path: Path,
    *,
    dtype: str = "f32",
    n_embd: int = 256,
    n_layer: int = 2,
    n_ff: int = 512,
    n_vocab: int = 512,
    seed: int = 0,
    name: str = "synth",
) -> Path:
    """Write the model to ``path``; ``seed`` changes the weights (and so the digest)."""
    ggml_type, np_type = _GGML[dtype]
    tokens = ["<unk>", "<s>", "</s>", *[f"t{i}" for i in range(n_vocab - 3)]]
    kvs = [
        _kv_str("general.architecture", "llama"),
        _kv_str("general.name", name),
        _kv_u32("general.file_type", _FILE_TYPE[dtype]),
        _kv_u32("llama.context_length", 512),
        _kv_u32("llama.embedding_length", n_embd),
        _kv_u32("llama.block_count", n_layer),
        _kv_u32("llama.feed_forward_length", n_ff),
        _kv_u32("llama.attention.head_count", 4),
        _kv_u32("llama.attention.head_count_kv", 4),
        _kv_u32("llama.rope.dimension_count", n_embd // 4),
        _kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5),
        _kv_str("tokenizer.ggml.model", "llama"),
        _kv_strs("tokenizer.ggml.tokens", tokens),
        _kv_f32s("tokenizer.ggml.scores", [0.0] * n_vocab),
        _kv_u32s("tokenizer.ggml.token_type", [2, 3, 3] + [1] * (n_vocab - 3)),
        _kv_u32("tokenizer.ggml.bos_token_id", 1),
        _kv_u32("tokenizer.ggml.eos_token_id", 2),
    ]
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("token_embd.weight", (n_embd, n_vocab)),
        ("output_norm.weight", (n_embd,)),
        ("output.weight", (n_embd, n_vocab)),
    ]
    for i in range(n_layer):
        shapes += [
            (f"blk.{i}.attn_norm.weight", (n_embd,)),
            (f"blk.{i}.attn_q.weight", (n_embd, n_embd)),
            (f"blk.{i}.attn_k.weight", (n_embd, n_embd)),
            (f"blk.{i}.attn_v.weight", (n_embd, n_embd)),
            (f"blk.{i}.attn_output.weight", (n_embd, n_embd)),
            (f"blk.{i}.ffn_norm.weight", (n_embd,)),
            (f"blk.{i}.ffn_gate.weight", (n_embd, n_ff)),
            (f"blk.{i}.ffn_up.weight", (n_embd, n_ff)),
            (f"blk.{i}.ffn_down.weight", (n_ff, n_embd)),
        ]
    rng = np.random.default_rng(seed)
    infos, blobs, offset = [], [], 0
    for tname, shape in shapes:
        norm = len(shape) == 1
        ttype, ntype = (0, np.float32) if norm else (ggml_type, np_type)
        values = np.ones(shape[::-1]) if norm else rng.standard_normal(shape[::-1]) * 0.02
        data = values.astype(ntype).tobytes()
        dims = struct.pack(f"<I{len(shape)}Q", len(shape), *shape)
        infos.append(_s(tname) + dims + struct.pack("<IQ", ttype, offset))
        pad = (-len(data)) % _ALIGN
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
    head = b"GGUF" + struct.pack("<IQQ", 3, len(shapes), len(kvs)) + b"".join(kvs) + b"".join(infos)
    head += b"\0" * ((-len(head)) % _ALIGN)
    path.write_bytes(head + b"".join(blobs))
    return path
