"""A pure-Python GGUF header reader: metadata key/values and the tensor table, never the weights.

Only the header pages of the file are touched (it is memory-mapped). As Ollama's
``ggml.Decode(rs, maxArraySize)`` does, an array longer than ``MAX_ARRAY`` is stepped over and
kept as a ``GGUFArray`` (element type and length): one Python object per element would cost
many times the file's bytes. The elements the gateway reads from such an array (the bos and eos
tokens) are read while the file is open. The header's size, key count and tensor count are
bounded, so a hostile file cannot take minutes of CPU. Parsed headers are cached by key (a
blob digest: blobs are immutable) in an LRU bounded by count and by bytes.
"""

from __future__ import annotations

import logging
import mmap
import struct
import threading
from collections import OrderedDict
from collections.abc import Container
from pathlib import Path
from typing import Any

from power.errors import InvalidRequestError
from power.store.gguf_info import TOKENS_KEY, GGUFArray, GGUFInfo, TensorInfo, tensor_type_name

__all__ = ["MAX_ARRAY", "GGUFError", "read_gguf"]

log = logging.getLogger(__name__)

_MAGIC = b"GGUF"
MAX_ARRAY = 1024  # Ollama's maxArraySize: longer arrays keep only their type and length
_MAX_KEPT = 1 << 16  # array elements kept per file, all arrays together
# ... where every array is read whole (a verbose show): the largest real vocabularies, their
# merges and token types together hold under a million
_MAX_KEPT_WHOLE = 1 << 21
_MAX_ARRAYS = 1 << 16  # arrays per file, nested ones included (real files hold a dozen)
_MAX_NESTING = 4  # arrays of arrays: real files nest one level at most
_MAX_HEADER = 64 << 20  # bytes of metadata and tensor table (a 256k vocabulary takes ~10 MB)
_MAX_KEYS = 1 << 16
_MAX_TENSORS = 1 << 16  # real models have a few thousand at most
_CACHE_ENTRIES = 1024
_CACHE_BYTES = 64 << 20  # what the cached headers hold, roughly (_Reader.weight)

# GGUF metadata value types -> struct format (scalars); 8 = string, 9 = array.
_SCALARS: dict[int, str] = {
    0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d",
}  # fmt: skip
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")
_OBJECT = 64  # bytes a kept value costs beside its characters, roughly (object + references)


class GGUFError(InvalidRequestError):
    """The file is not a GGUF file we can read."""


class _Reader:
    """Sequential little-endian reads over a buffer (a memory map); every string and array is
    checked to end before ``end``, so scalars between them overrun it by a few bytes at most."""

    __slots__ = ("arrays", "buf", "end", "keep", "max_array", "pos", "weight")

    def __init__(self, buf: mmap.mmap, max_array: int | None) -> None:
        self.buf = buf
        self.end = min(len(buf), _MAX_HEADER)
        self.pos = 0
        self.max_array = max_array  # None: keep every array whole
        self.keep = _MAX_KEPT if max_array is not None else _MAX_KEPT_WHOLE  # elements left
        self.arrays = _MAX_ARRAYS  # arrays this file may still hold
        self.weight = 0  # bytes the parsed values hold, roughly

    def within(self, end: int, what: str) -> None:
        """Refuse a read that would end at ``end``, past the file or the header's bound."""
        if end <= self.end:
            return
        if end <= len(self.buf):
            raise GGUFError(f"invalid GGUF: the header is larger than {_MAX_HEADER >> 20} MiB")
        raise GGUFError(f"invalid GGUF: {what} past the end of the file")

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("Q")
        end = self.pos + n
        self.within(end, "string runs")
        raw = self.buf[self.pos : end]
        self.pos = end
        self.weight += _OBJECT + n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int, depth: int = 0) -> Any:
        fmt = _SCALARS.get(vtype)
        if fmt is not None:
            return self.unpack(fmt)
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array(depth + 1)
        raise GGUFError(f"invalid GGUF: unknown value type {vtype}")

    def _array_head(self, depth: int) -> tuple[int, int]:
        if depth > _MAX_NESTING:
            raise GGUFError(f"invalid GGUF: arrays nested more than {_MAX_NESTING} deep")
        self.arrays -= 1
        if self.arrays < 0:
            raise GGUFError(f"invalid GGUF: more than {_MAX_ARRAYS} arrays")
        itype = self.unpack("I")
        count = self.unpack("Q")
        fmt = _SCALARS.get(itype)
        least = struct.calcsize(fmt) if fmt is not None else 8  # a string's length, at least
        self.within(self.pos + count * least, "array runs")
        return itype, count

    def array(self, depth: int) -> list[Any] | GGUFArray:
        itype, count = self._array_head(depth)
        if count > self.keep or (self.max_array is not None and count > self.max_array):
            self.skip(itype, count, depth)
            return GGUFArray(type=itype, count=count)
        self.keep -= count
        self.weight += _OBJECT + 8 * count
        fmt = _SCALARS.get(itype)
        if fmt is not None:
            values = list(struct.unpack_from(f"<{count}{fmt}", self.buf, self.pos))
            self.pos += struct.calcsize(f"<{count}{fmt}")
            self.weight += 32 * count
            return values
        if itype == _STRING:
            return self.strings(count, range(count))
        return [self.value(itype, depth) for _ in range(count)]

    def strings(self, count: int, wanted: Container[int]) -> list[str]:
        """Step over ``count`` strings, decoding those whose index is ``wanted``."""
        buf, pos, end, out = self.buf, self.pos, self.end, []
        unpack_len = _U64.unpack_from
        for i in range(count):
            (n,) = unpack_len(buf, pos)
            pos += 8
            if pos + n > end:
                self.within(pos + n, "string runs")
            if i in wanted:
                out.append(buf[pos : pos + n].decode("utf-8", errors="replace"))
                self.weight += _OBJECT + n
            pos += n
        self.pos = pos
        return out

    def skip(self, itype: int, count: int, depth: int) -> None:
        """Step over ``count`` elements of type ``itype`` without making an object of any."""
        fmt = _SCALARS.get(itype)
        if fmt is not None:
            self.pos += count * struct.calcsize(fmt)  # (checked by _array_head)
        elif itype == _STRING:
            self.strings(count, ())
        elif itype == _ARRAY:
            for _ in range(count):
                inner, n = self._array_head(depth + 1)
                self.skip(inner, n, depth + 1)
        else:
            raise GGUFError(f"invalid GGUF: unknown value type {itype}")


def _special_tokens(r: _Reader, metadata: dict[str, Any], start: int | None) -> dict[int, str]:
    """The bos and eos tokens of a token list too long to keep (its header at ``start``)."""
    tokens = metadata.get(TOKENS_KEY)
    if start is None or not isinstance(tokens, GGUFArray) or tokens.type != _STRING:
        return {}
    ids = (metadata.get(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos"))
    wanted = sorted({i for i in ids if isinstance(i, int) and 0 <= i < tokens.count})
    if not wanted:
        return {}
    r.pos = start + 12  # (past the array's type and count)
    return dict(zip(wanted, r.strings(wanted[-1] + 1, wanted), strict=True))


def _parse(buf: mmap.mmap, max_array: int | None) -> tuple[GGUFInfo, int]:
    """The header in ``buf`` and roughly how many bytes its parsed form holds."""
    r = _Reader(buf, max_array)
    if buf[:4] != _MAGIC:
        raise GGUFError("supplied file was not in GGUF format")
    r.pos = 4
    version = r.unpack("I")
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version}")
    n_tensors, n_kv = r.unpack("Q"), r.unpack("Q")
    for n, what, most in ((n_kv, "metadata keys", _MAX_KEYS), (n_tensors, "tensors", _MAX_TENSORS)):
        if n > most:
            raise GGUFError(f"invalid GGUF: {n} {what}, more than {most}")
    metadata: dict[str, Any] = {}
    tokens_start = None
    for _ in range(n_kv):
        key = r.string()
        vtype = r.unpack("I")
        if key == TOKENS_KEY:
            tokens_start = r.pos
        metadata[key] = r.value(vtype)
    tensors_start = r.pos
    special = _special_tokens(r, metadata, tokens_start)
    r.pos = tensors_start
    tensors: list[TensorInfo] = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.unpack("I")
        if n_dims > 8:
            raise GGUFError(f"invalid GGUF: tensor {name!r} has {n_dims} dimensions")
        shape = [r.unpack("Q") for _ in range(n_dims)]
        type_id = r.unpack("I")
        r.unpack("Q")  # data offset; the weights are never read
        r.weight += 2 * _OBJECT + 40 * n_dims
        tensors.append(TensorInfo(name=name, type=tensor_type_name(type_id), shape=shape))
    r.weight += _OBJECT * len(metadata)
    info = GGUFInfo(version=version, metadata=metadata, tensors=tensors, special_tokens=special)
    return info, r.weight


_cache: OrderedDict[str, tuple[GGUFInfo, int]] = OrderedDict()  # key -> (header, weight)
_cache_held = 0
_cache_lock = threading.Lock()


def _remember(key: str, info: GGUFInfo, weight: int) -> None:
    global _cache_held
    if weight > _CACHE_BYTES // 4:  # (one such header would push out many ordinary ones)
        return
    with _cache_lock:
        old = _cache.pop(key, None)
        _cache[key] = (info, weight)
        _cache_held += weight - (old[1] if old else 0)
        while len(_cache) > _CACHE_ENTRIES or _cache_held > _CACHE_BYTES:
            _cache_held -= _cache.popitem(last=False)[1][1]


def read_gguf(
    path: str | Path, *, cache_key: str | None = None, max_array: int | None = MAX_ARRAY
) -> GGUFInfo:
    """Parse the header of the GGUF file at ``path``.

    ``cache_key`` (a blob digest) enables caching; omit it for files that may change. Arrays
    longer than ``max_array`` are kept as ``GGUFArray``; ``max_array=None`` keeps every one
    whole (Ollama's verbose show) up to two million elements in all, and such a read is never
    cached.
    Raises :class:`GGUFError` for anything that is not a readable GGUF v2/v3 file.
    """
    if max_array != MAX_ARRAY:
        cache_key = None
    if cache_key is not None:
        with _cache_lock:
            hit = _cache.get(cache_key)
            if hit is not None:
                _cache.move_to_end(cache_key)
                return hit[0]
    try:
        with open(path, "rb") as f:
            if f.seek(0, 2) < 24:
                raise GGUFError("supplied file was not in GGUF format")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                info, weight = _parse(buf, max_array)
    except struct.error as exc:
        raise GGUFError("invalid GGUF: unexpected end of file") from exc
    except (UnicodeDecodeError, MemoryError, OverflowError) as exc:
        raise GGUFError(f"invalid GGUF: {exc}") from exc
    if cache_key is not None:
        _remember(cache_key, info, weight)
    log.debug("parsed GGUF %s: %d keys, %d tensors", path, len(info.metadata), len(info.tensors))
    return info
