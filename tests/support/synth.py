"""Synthetic GGUF files and images, made here: nothing is downloaded. Weights are seeded random
numbers.

``write_llama_gguf`` is a tiny llama-architecture model with real F32/F16 weights: big enough to
split into several download parts, small enough to be fast, and a valid input for llama.cpp's
quantizer (which wants an F16/BF16/F32 source). ``write_lora`` and ``write_projector`` are a
LoRA adapter and a vision projector for SmolLM2; ``with_metadata`` copies a GGUF with keys
added (SmolLM2 with a pooling type is an embedding model); ``png`` makes tiny images.

The projector is a CLIP-style ViT with a LLaVA ``mlp`` projector of a real shape (the tensor
names, keys and layouts llama.cpp's ``mtmd`` loads), kept small: 32 px images in 16 px patches,
so an image is 4 embeddings of the text model's width.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from power.store.gguf import read_gguf

__all__ = [
    "png",
    "with_metadata",
    "write_gguf",
    "write_llama_gguf",
    "write_lora",
    "write_projector",
]

_ALIGN = 32
_U32, _I32, _F32, _BOOL, _STR, _ARR = 4, 5, 6, 7, 8, 9
_TENSOR_TYPES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}


def _str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _value(value: Any) -> bytes:
    """A typed metadata value: bool, int (u32, or i32 when negative), float (f32), str, or a
    list of one of those."""
    if isinstance(value, bool):
        return struct.pack("<I?", _BOOL, value)
    if isinstance(value, int):
        return struct.pack("<Ii", _I32, value) if value < 0 else struct.pack("<II", _U32, value)
    if isinstance(value, float):
        return struct.pack("<If", _F32, value)
    if isinstance(value, str):
        return struct.pack("<I", _STR) + _str(value)
    if isinstance(value, list) and value:
        first = _value(value[0])
        kind = struct.unpack_from("<I", first)[0]
        items = b"".join(_value(v)[4:] for v in value)
        return struct.pack("<IIQ", _ARR, kind, len(value)) + items
    raise TypeError(f"cannot write {value!r} as GGUF metadata")


def write_gguf(path: Path, metadata: Mapping[str, Any], tensors: Mapping[str, Any]) -> Path:
    """Write a GGUF v3 file. Tensors are numpy arrays (float32 or float16) in numpy's row-major
    shape; GGUF stores the dimensions reversed (ggml's ``ne``: fastest-varying first)."""
    kvs = b"".join(_str(key) + _value(value) for key, value in metadata.items())
    infos, blobs, offset = [], [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array)
        ne = data.shape[::-1]
        infos.append(
            _str(name)
            + struct.pack(f"<I{len(ne)}Q", len(ne), *ne)
            + struct.pack("<IQ", _TENSOR_TYPES[data.dtype], offset)
        )
        raw = data.tobytes()
        pad = (-len(raw)) % _ALIGN
        blobs.append(raw + b"\0" * pad)
        offset += len(raw) + pad
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)) + kvs + b"".join(infos)
    head += b"\0" * ((-len(head)) % _ALIGN)
    path.write_bytes(head + b"".join(blobs))
    return path


_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _skip_value(raw: bytes, pos: int, vtype: int) -> int:
    """Where the GGUF value of type ``vtype`` at ``pos`` ends."""
    if vtype in _SCALAR_SIZES:
        return pos + _SCALAR_SIZES[vtype]
    if vtype == _STR:
        return pos + 8 + int(struct.unpack_from("<Q", raw, pos)[0])
    if vtype == _ARR:
        itype, count = struct.unpack_from("<IQ", raw, pos)
        pos += 12
        if itype in _SCALAR_SIZES:
            return pos + int(count) * _SCALAR_SIZES[itype]
        for _ in range(count):
            pos = _skip_value(raw, pos, itype)
        return pos
    raise ValueError(f"unknown GGUF value type {vtype}")


def with_metadata(src: Path, dst: Path, extra: Mapping[str, Any]) -> Path:
    """Copy the GGUF ``src`` to ``dst`` with the keys of ``extra`` added (the tensors, of any
    type, unchanged): e.g. a pooling type that makes SmolLM2 an embedding model."""
    raw = src.read_bytes()
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", raw, 4)
    pos = 24
    for _ in range(n_kv):
        pos += 8 + struct.unpack_from("<Q", raw, pos)[0]  # the key
        pos = _skip_value(raw, pos + 4, struct.unpack_from("<I", raw, pos)[0])
    kv_end = pos
    for _ in range(n_tensors):
        pos += 8 + struct.unpack_from("<Q", raw, pos)[0]  # the name
        n_dims = struct.unpack_from("<I", raw, pos)[0]
        pos += 4 + 8 * n_dims + 4 + 8  # dims, type, offset
    align = int(read_gguf(src).metadata.get("general.alignment", _ALIGN))
    data = raw[pos + (-pos) % align :]
    kvs = b"".join(_str(key) + _value(value) for key, value in extra.items())
    head = raw[:4] + struct.pack("<IQQ", version, n_tensors, n_kv + len(extra))
    head += raw[24:kv_end] + kvs + raw[kv_end:pos]
    head += b"\0" * ((-len(head)) % align)
    dst.write_bytes(head + data)
    return dst


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
    """A llama model at ``path`` (F32 or F16 weights, F32 norms); ``seed`` changes the weights
    (and so the digest)."""
    weights = {"f32": np.float32, "f16": np.float16}[dtype]
    metadata: dict[str, Any] = {
        "general.architecture": "llama",
        "general.name": name,
        "general.file_type": {"f32": 0, "f16": 1}[dtype],
        "llama.context_length": 512,
        "llama.embedding_length": n_embd,
        "llama.block_count": n_layer,
        "llama.feed_forward_length": n_ff,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 4,
        "llama.rope.dimension_count": n_embd // 4,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>", *[f"t{i}" for i in range(n_vocab - 3)]],
        "tokenizer.ggml.scores": [0.0] * n_vocab,
        "tokenizer.ggml.token_type": [2, 3, 3] + [1] * (n_vocab - 3),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }
    shapes: list[tuple[str, tuple[int, ...]]] = [  # ggml's ne order: fastest-varying first
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
    tensors: dict[str, Any] = {}
    for tname, shape in shapes:
        if len(shape) == 1:  # norms stay F32
            tensors[tname] = np.ones(shape[::-1]).astype(np.float32)
        else:
            tensors[tname] = (rng.standard_normal(shape[::-1]) * 0.02).astype(weights)
    return write_gguf(path, metadata, tensors)


def write_lora(
    path: Path,
    base: Path,
    *,
    rank: int = 8,
    scale: float = 0.05,
    zero: bool = False,
    seed: int = 0,
    targets: tuple[str, ...] = ("attn_q", "attn_v", "ffn_down"),
) -> Path:
    """A LoRA adapter for the model at ``base``, on ``targets`` of every block.

    ``lora_a`` is ``rank`` x n_in and ``lora_b`` n_out x ``rank`` (numpy shapes), the transposed
    layout llama.cpp expects. With ``zero`` the B matrices are all zeros, so the adapter adds
    nothing and the model's output must not change.
    """
    info = read_gguf(base)
    arch = info.architecture
    rng = np.random.default_rng(seed)
    tensors: dict[str, Any] = {}
    for tensor in info.tensors:
        parts = tensor.name.split(".")
        if len(parts) != 4 or parts[0] != "blk" or parts[2] not in targets:
            continue
        n_in, n_out = tensor.shape[0], tensor.shape[1]
        a = rng.standard_normal((rank, n_in)) * scale
        b = np.zeros((n_out, rank)) if zero else rng.standard_normal((n_out, rank)) * scale
        tensors[f"{tensor.name}.lora_a"] = a.astype(np.float32)
        tensors[f"{tensor.name}.lora_b"] = b.astype(np.float32)
    metadata = {
        "general.architecture": arch,
        "general.type": "adapter",
        "general.name": "synthetic lora",
        "adapter.type": "lora",
        "adapter.lora.alpha": float(rank),
    }
    return write_gguf(path, metadata, tensors)


def write_projector(
    path: Path,
    *,
    n_embd_text: int = 576,
    image_size: int = 32,
    patch_size: int = 16,
    n_embd: int = 64,
    n_ff: int = 128,
    n_head: int = 4,
    n_layer: int = 2,
    seed: int = 0,
) -> Path:
    """A CLIP vision encoder with a LLaVA ``mlp`` projector into ``n_embd_text`` wide embeddings.

    llama.cpp's LLaVA graph runs the ViT up to its second-to-last block, so with the default two
    blocks one computes; both must exist. An image becomes (image_size / patch_size)^2
    embeddings.
    """
    rng = np.random.default_rng(seed)

    def weight(*shape: int, std: float = 0.05) -> Any:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def ones(n: int) -> Any:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> Any:
        return np.zeros(n, dtype=np.float32)

    n_patches = (image_size // patch_size) ** 2
    tensors: dict[str, Any] = {
        "v.patch_embd.weight": weight(n_embd, 3, patch_size, patch_size, std=0.1),
        "v.class_embd": weight(n_embd),
        "v.position_embd.weight": weight(n_patches + 1, n_embd),
        "v.pre_ln.weight": ones(n_embd),
        "v.pre_ln.bias": zeros(n_embd),
    }
    for i in range(n_layer):
        blk = f"v.blk.{i}"
        for proj in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors[f"{blk}.{proj}.weight"] = weight(n_embd, n_embd)
            tensors[f"{blk}.{proj}.bias"] = zeros(n_embd)
        tensors |= {
            f"{blk}.ln1.weight": ones(n_embd),
            f"{blk}.ln1.bias": zeros(n_embd),
            f"{blk}.ln2.weight": ones(n_embd),
            f"{blk}.ln2.bias": zeros(n_embd),
            f"{blk}.ffn_up.weight": weight(n_ff, n_embd),
            f"{blk}.ffn_up.bias": zeros(n_ff),
            f"{blk}.ffn_down.weight": weight(n_embd, n_ff),
            f"{blk}.ffn_down.bias": zeros(n_embd),
        }
    tensors |= {
        "mm.0.weight": weight(n_embd_text, n_embd, std=0.2),
        "mm.0.bias": zeros(n_embd_text),
        "mm.2.weight": weight(n_embd_text, n_embd_text, std=0.2),
        "mm.2.bias": zeros(n_embd_text),
    }
    metadata = {
        "general.architecture": "clip",
        "general.type": "mmproj",
        "general.name": "synthetic projector",
        "general.file_type": 0,
        "clip.has_text_encoder": False,
        "clip.has_vision_encoder": True,
        "clip.projector_type": "mlp",
        "clip.use_gelu": True,
        "clip.vision.image_size": image_size,
        "clip.vision.patch_size": patch_size,
        "clip.vision.embedding_length": n_embd,
        "clip.vision.feed_forward_length": n_ff,
        "clip.vision.projection_dim": n_embd_text,
        "clip.vision.block_count": n_layer,
        "clip.vision.attention.head_count": n_head,
        "clip.vision.attention.layer_norm_epsilon": 1e-5,
        "clip.vision.image_mean": [0.5, 0.5, 0.5],
        "clip.vision.image_std": [0.5, 0.5, 0.5],
    }
    return write_gguf(path, metadata, tensors)


def png(width: int, height: int, *, seed: int = 0) -> bytes:
    """An RGB PNG of seeded random pixels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    rows = b"".join(b"\0" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
