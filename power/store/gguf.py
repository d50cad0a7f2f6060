"""A pure-Python GGUF header reader: metadata key/values and the tensor table, never the weights.

Only the header pages of the file are touched (it is memory-mapped), so reading a 100 MB model
with a 49k-token vocabulary takes tens of milliseconds. Parsed headers are cached by key (a
blob digest: blobs are immutable) in a small LRU.
"""

from __future__ import annotations

import logging
import math
import mmap
import struct
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import msgspec

from power.errors import InvalidRequestError

__all__ = [
    "GGUFError",
    "GGUFInfo",
    "TensorInfo",
    "file_type_name",
    "human_number",
    "read_gguf",
    "tensor_type_name",
]

log = logging.getLogger(__name__)

_MAGIC = b"GGUF"
_CACHE_SIZE = 16

# GGUF metadata value types -> struct format (scalars); 8 = string, 9 = array.
_SCALARS: dict[int, str] = {
    0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d",
}  # fmt: skip
_STRING, _ARRAY = 8, 9

_TENSOR_TYPES = (
    "F32 F16 Q4_0 Q4_1 Q4_2 Q4_3 Q5_0 Q5_1 Q8_0 Q8_1 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K IQ2_XXS IQ2_XS "
    "IQ3_XXS IQ1_S IQ4_NL IQ3_S IQ2_S IQ4_XS I8 I16 I32 I64 F64 IQ1_M BF16 Q4_0_4_4 Q4_0_4_8 "
    "Q4_0_8_8 TQ1_0 TQ2_0 IQ4_NL_4_4 IQ4_NL_4_8 IQ4_NL_8_8 MXFP4"
).split()

# llama_ftype values (general.file_type) -> Ollama's quantization level names.
_FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "MXFP4", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4",
}  # fmt: skip


class GGUFError(InvalidRequestError):
    """The file is not a GGUF file we can read."""


def tensor_type_name(type_id: int) -> str:
    return _TENSOR_TYPES[type_id] if 0 <= type_id < len(_TENSOR_TYPES) else "unknown"


def file_type_name(file_type: int | None) -> str:
    """``general.file_type`` -> quantization level name (``"unknown"`` when unrecognised)."""
    return _FILE_TYPES.get(file_type, "unknown") if file_type is not None else "unknown"


def human_number(n: int) -> str:
    """Ollama's ``format.HumanNumber``: 134515008 -> "134.52M", 1_235_814_400 -> "1.2B"."""
    if n >= 1_000_000_000:
        value = n / 1_000_000_000
        return f"{value:.0f}B" if value == math.floor(value) else f"{value:.1f}B"
    if n >= 1_000_000:
        value = n / 1_000_000
        return f"{value:.0f}M" if value == math.floor(value) else f"{value:.2f}M"
    if n >= 1_000:
        return f"{n / 1_000:.0f}K"
    return str(n)


class TensorInfo(msgspec.Struct, frozen=True):
    name: str
    type: str
    shape: list[int]

    @property
    def parameters(self) -> int:
        return math.prod(self.shape)


class GGUFInfo(msgspec.Struct, frozen=True):
    """A parsed header: ``metadata`` (key -> value, arrays as lists) and the tensor table."""

    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]

    def _arch_key(self, suffix: str) -> Any:
        return self.metadata.get(f"{self.architecture}.{suffix}")

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) and arch else "unknown"

    @property
    def parameter_count(self) -> int:
        return sum(t.parameters for t in self.tensors)

    @property
    def parameter_size(self) -> str:
        return human_number(self.parameter_count)

    @property
    def file_type(self) -> str:
        ft = self.metadata.get("general.file_type")
        return file_type_name(ft if isinstance(ft, int) else None)

    @property
    def context_length(self) -> int | None:
        value = self._arch_key("context_length")
        return value if isinstance(value, int) else None

    @property
    def embedding_length(self) -> int | None:
        value = self._arch_key("embedding_length")
        return value if isinstance(value, int) else None

    @property
    def pooling_type(self) -> int | None:
        value = self._arch_key("pooling_type")
        return value if isinstance(value, int) else None

    @property
    def has_pooling_type(self) -> bool:
        return f"{self.architecture}.pooling_type" in self.metadata

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value else None

    def _token(self, id_key: str) -> str | None:
        token_id = self.metadata.get(id_key)
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        if isinstance(token_id, int) and isinstance(tokens, list) and 0 <= token_id < len(tokens):
            token = tokens[token_id]
            return token if isinstance(token, str) else None
        return None

    @property
    def bos_token(self) -> str | None:
        return self._token("tokenizer.ggml.bos_token_id")

    @property
    def eos_token(self) -> str | None:
        return self._token("tokenizer.ggml.eos_token_id")


class _Reader:
    """Sequential little-endian reads over a buffer (a memory map)."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("Q")
        end = self.pos + n
        if end > len(self.buf):
            raise GGUFError("invalid GGUF: string runs past the end of the file")
        raw = self.buf[self.pos : end]
        self.pos = end
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        fmt = _SCALARS.get(vtype)
        if fmt is not None:
            return self.unpack(fmt)
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array()
        raise GGUFError(f"invalid GGUF: unknown value type {vtype}")

    def array(self) -> list[Any]:
        itype = self.unpack("I")
        count = self.unpack("Q")
        if count > len(self.buf):  # every element takes at least one byte
            raise GGUFError("invalid GGUF: array length exceeds the file size")
        fmt = _SCALARS.get(itype)
        if fmt is not None:
            values = list(struct.unpack_from(f"<{count}{fmt}", self.buf, self.pos))
            self.pos += struct.calcsize(f"<{count}{fmt}")
            return values
        if itype == _STRING:
            return self._strings(count)
        return [self.value(itype) for _ in range(count)]

    def _strings(self, count: int) -> list[str]:
        buf, pos, out = self.buf, self.pos, []
        size = len(buf)
        unpack_len = struct.Struct("<Q").unpack_from
        for _ in range(count):
            (n,) = unpack_len(buf, pos)
            pos += 8
            if pos + n > size:
                raise GGUFError("invalid GGUF: string runs past the end of the file")
            out.append(buf[pos : pos + n].decode("utf-8", errors="replace"))
            pos += n
        self.pos = pos
        return out


def _parse(buf: mmap.mmap) -> GGUFInfo:
    r = _Reader(buf)
    if buf[:4] != _MAGIC:
        raise GGUFError("supplied file was not in GGUF format")
    r.pos = 4
    version = r.unpack("I")
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version}")
    n_tensors, n_kv = r.unpack("Q"), r.unpack("Q")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = r.string()
        metadata[key] = r.value(r.unpack("I"))
    tensors: list[TensorInfo] = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.unpack("I")
        if n_dims > 8:
            raise GGUFError(f"invalid GGUF: tensor {name!r} has {n_dims} dimensions")
        shape = [r.unpack("Q") for _ in range(n_dims)]
        type_id = r.unpack("I")
        r.unpack("Q")  # data offset; the weights are never read
        tensors.append(TensorInfo(name=name, type=tensor_type_name(type_id), shape=shape))
    return GGUFInfo(version=version, metadata=metadata, tensors=tensors)


_cache: OrderedDict[str, GGUFInfo] = OrderedDict()
_cache_lock = threading.Lock()


def read_gguf(path: str | Path, *, cache_key: str | None = None) -> GGUFInfo:
    """Parse the header of the GGUF file at ``path``.

    ``cache_key`` (a blob digest) enables caching; omit it for files that may change.
    Raises :class:`GGUFError` for anything that is not a readable GGUF v2/v3 file.
    """
    if cache_key is not None:
        with _cache_lock:
            hit = _cache.get(cache_key)
            if hit is not None:
                _cache.move_to_end(cache_key)
                return hit
    try:
        with open(path, "rb") as f:
            if f.seek(0, 2) < 24:
                raise GGUFError("supplied file was not in GGUF format")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                info = _parse(buf)
    except struct.error as exc:
        raise GGUFError("invalid GGUF: unexpected end of file") from exc
    except (UnicodeDecodeError, MemoryError, OverflowError) as exc:
        raise GGUFError(f"invalid GGUF: {exc}") from exc
    if cache_key is not None:
        with _cache_lock:
            _cache[cache_key] = info
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    log.debug("parsed GGUF %s: %d keys, %d tensors", path, len(info.metadata), len(info.tensors))
    return info
