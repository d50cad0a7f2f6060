"""What a hostile GGUF header can cost the gateway: long arrays are stepped over, not decoded;
nesting, tensor count and header size are bounded; the header cache holds many models but not
without limit; and metadata of the wrong type never fails a model's memory estimate."""

from __future__ import annotations

import hashlib
import math
import struct
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest

from power.store.gguf import MAX_ARRAY, GGUFError, read_gguf
from power.store.gguf_info import GGUFArray
from power.supervisor.memory import estimate

U8, U32, F32, BOOL, STR, ARR = 0, 4, 6, 7, 8, 9
MIB = 2**20


def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv_str(key: str, value: str) -> bytes:
    return _s(key) + struct.pack("<I", STR) + _s(value)


def kv_u32(key: str, value: int) -> bytes:
    return _s(key) + struct.pack("<II", U32, value)


def kv_strings(key: str, values: Sequence[str]) -> bytes:
    return _s(key) + struct.pack("<IIQ", ARR, STR, len(values)) + b"".join(map(_s, values))


def kv_bytes(key: str, values: bytes) -> bytes:
    return _s(key) + struct.pack("<IIQ", ARR, U8, len(values)) + values


def gguf(path: Path, kvs: Sequence[bytes], tensors: Sequence[bytes] = ()) -> Path:
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    path.write_bytes(head + b"".join(kvs) + b"".join(tensors))
    return path


def tensor(name: str, shape: Sequence[int]) -> bytes:
    dims = struct.pack(f"<I{len(shape)}Q", len(shape), *shape)
    return _s(name) + dims + struct.pack("<IQ", 0, 0)


def key_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


# -- long arrays -----------------------------------------------------------------------------


def test_a_long_array_keeps_only_its_type_and_length(tmp_path: Path) -> None:
    """A 2 MiB byte array and a 5000-token vocabulary are stepped over: parsing allocates far
    less than the file holds, yet the vocabulary size, the bos and eos tokens (their ids
    written before the tokens), short arrays and the tensor table after them all read. Read
    whole (a verbose show), the arrays are kept up to two million elements in all."""
    vocab = [f"tok{i}" for i in range(5000)]
    path = gguf(
        tmp_path / "long.gguf",
        [
            kv_str("general.architecture", "llama"),
            kv_u32("tokenizer.ggml.bos_token_id", 7),
            kv_u32("tokenizer.ggml.eos_token_id", 4321),
            kv_bytes("junk", b"\x01" * (2 * MIB + 1)),
            kv_strings("tokenizer.ggml.tokens", vocab),
            kv_strings("tokenizer.ggml.merges", [f"a{i} b{i}" for i in range(2000)]),
            kv_strings("general.tags", [f"t{i}" for i in range(MAX_ARRAY)]),
        ],
        [tensor("token_embd.weight", [64, 5000]), tensor("output_norm.weight", [64])],
    )
    tracemalloc.start()
    try:
        info = read_gguf(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MIB  # one object per element would take tens of MiB
    md = info.metadata
    assert md["junk"] == GGUFArray(type=U8, count=2 * MIB + 1)
    assert md["tokenizer.ggml.tokens"] == GGUFArray(type=STR, count=5000)
    assert len(md["tokenizer.ggml.tokens"]) == 5000
    assert md["tokenizer.ggml.merges"] == GGUFArray(type=STR, count=2000)
    assert md["general.tags"] == [f"t{i}" for i in range(MAX_ARRAY)]  # at the bound: kept
    assert info.vocab_size == 5000
    assert (info.bos_token, info.eos_token) == ("tok7", "tok4321")
    assert [(t.name, t.shape) for t in info.tensors] == [
        ("token_embd.weight", [64, 5000]),
        ("output_norm.weight", [64]),
    ]
    full = read_gguf(path, max_array=None)  # (what a verbose /api/show lists)
    assert full.metadata["tokenizer.ggml.tokens"] == vocab
    assert full.metadata["junk"] == GGUFArray(type=U8, count=2 * MIB + 1)  # past the bound
    assert full.metadata["general.tags"] == [f"t{i}" for i in range(MAX_ARRAY)]
    assert (full.bos_token, full.eos_token) == ("tok7", "tok4321")


# -- bounds on the header itself ---------------------------------------------------------------


def _nested(depth: int) -> bytes:
    inner = struct.pack("<IQ", U32, 0)
    return _s("x") + struct.pack("<I", ARR) + struct.pack("<IQ", ARR, 1) * depth + inner


@pytest.mark.parametrize(
    ("kv", "message"),
    [
        (_nested(3000), "nested more than"),
        # (an array of 70,000 empty arrays: each step costs Python time, so their number is bounded)
        (_s("x") + struct.pack("<IIQ", ARR, ARR, 70_000) + struct.pack("<IQ", U8, 0) * 70_000,
         "more than 65536 arrays"),
    ],
    ids=["deep", "numerous"],
)  # fmt: skip
def test_deep_or_numerous_nested_arrays_are_an_invalid_gguf(
    tmp_path: Path, kv: bytes, message: str
) -> None:
    """3,000 levels used to raise RecursionError (a 500); now it is a 400 naming the cause."""
    path = gguf(tmp_path / "nested.gguf", [kv_str("general.architecture", "llama"), kv])
    with pytest.raises(GGUFError, match=message) as caught:
        read_gguf(path)
    assert caught.value.status == 400


def test_too_many_tensors_are_an_invalid_gguf(tmp_path: Path) -> None:
    """A million empty tensor entries took seconds of pure-Python parsing; real models have a
    few thousand at most, so past 65,536 the file is refused before any is read."""
    kvs = [kv_str("general.architecture", "llama")]
    path = gguf(tmp_path / "tensors.gguf", kvs, [tensor("", [])] * 65_537)
    with pytest.raises(GGUFError, match="65537 tensors, more than 65536"):
        read_gguf(path)


def test_a_header_past_64_mib_is_an_invalid_gguf(tmp_path: Path) -> None:
    """A string value that runs past 64 MiB of header (a sparse file: nothing is written)."""
    path = gguf(
        tmp_path / "big.gguf", [_s("general.description") + struct.pack("<IQ", STR, 65 * MIB)]
    )
    with path.open("r+b") as f:
        f.truncate(70 * MIB)
    with pytest.raises(GGUFError, match="header is larger than 64 MiB"):
        read_gguf(path)


# -- the header cache --------------------------------------------------------------------------


def test_the_header_cache_holds_many_models_but_not_without_bound(tmp_path: Path) -> None:
    """With 16 entries, /api/tags over 17 models re-parsed every header on every call. 200
    headers now all stay cached (each file is then spoiled, and each still reads from the
    cache); 1,100 more push the first ones out, and a header holding 17 MiB is never kept."""
    paths = [
        gguf(tmp_path / f"m{i}.gguf", [kv_str("general.architecture", f"arch{i}")])
        for i in range(1300)
    ]
    keys = [key_of(p) for p in paths]
    first = [read_gguf(p, cache_key=k) for p, k in zip(paths[:200], keys, strict=False)]
    for p in paths[:200]:
        p.write_bytes(b"spoiled")
    again = [read_gguf(p, cache_key=k) for p, k in zip(paths[:200], keys, strict=False)]
    assert all(a is b for a, b in zip(first, again, strict=True))
    for p, k in zip(paths[200:], keys[200:], strict=True):
        read_gguf(p, cache_key=k)
    with pytest.raises(GGUFError):
        read_gguf(paths[0], cache_key=keys[0])  # evicted, and the file is no GGUF any more

    big = gguf(tmp_path / "big.gguf", [kv_str("general.description", "x" * (17 * MIB))])
    big_key = key_of(big)
    assert read_gguf(big, cache_key=big_key).metadata["general.description"][:1] == "x"
    big.write_bytes(b"spoiled")
    with pytest.raises(GGUFError):
        read_gguf(big, cache_key=big_key)


# -- metadata of the wrong type --------------------------------------------------------------

BASE = [
    kv_str("general.architecture", "llama"),
    kv_u32("llama.block_count", 30),
    kv_u32("llama.embedding_length", 576),
    kv_u32("llama.attention.head_count", 9),
    kv_u32("llama.attention.head_count_kv", 3),
    kv_u32("llama.context_length", 8192),
]


def _meta_estimate(path: Path) -> int:
    return estimate(read_gguf(path).metadata, file_size=1, n_ctx=4096, num_parallel=2,
                    n_batch=512).total  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("llama.block_count", struct.pack("<I", STR) + _s("many")),
        ("llama.embedding_length", struct.pack("<If", F32, math.nan)),
        ("llama.attention.head_count_kv",
         struct.pack("<IIQ", ARR, ARR, 1) + struct.pack("<IQI", U32, 1, 8)),
        ("llama.embedding_length", struct.pack("<I?", BOOL, True)),
        ("llama.vocab_size", struct.pack("<I", STR) + _s("lots")),
    ],
    ids=["string", "nan", "nested-array", "bool", "string-vocab"],
)  # fmt: skip
def test_metadata_of_the_wrong_type_counts_as_absent(
    tmp_path: Path, key: str, value: bytes
) -> None:
    """Such files were accepted at create, then every generate on them was a 500 (int(value)
    in the estimate): a value that is not a count is treated as if the key were missing."""
    kept = [kv for kv in BASE if not kv.startswith(_s(key))]
    bad = gguf(tmp_path / "bad.gguf", [*kept, _s(key) + value])
    without = gguf(tmp_path / "without.gguf", kept)
    assert _meta_estimate(bad) == _meta_estimate(without)
