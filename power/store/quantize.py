"""Quantization with llama.cpp's quantizer, always in a child process.

``python -m power.store.quantize SRC DST TYPE`` imports llama-cpp-python and quantizes; the
gateway never imports ``llama_cpp`` itself. :func:`quantize` runs that child, turns the
quantizer's per-tensor log lines (``[  12/ 272] blk.0…``) into progress, and reaps it whatever
happens (a closed iterator kills it). Exit codes: 0 done, 1 quantizer failed, 2 bad arguments.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from power.errors import InvalidRequestError, PowerError

__all__ = ["QUANT_TYPES", "SOURCE_TYPES", "QuantizeError", "normalize_type", "quantize"]

log = logging.getLogger(__name__)

# Ollama's accepted names (case-insensitive) -> llama.cpp's LLAMA_FTYPE_MOSTLY_* suffix.
QUANT_TYPES: dict[str, str] = {
    "Q4_0": "Q4_0",
    "Q4_1": "Q4_1",
    "Q5_0": "Q5_0",
    "Q5_1": "Q5_1",
    "Q8_0": "Q8_0",
    "Q2_K": "Q2_K",
    "Q3_K_S": "Q3_K_S",
    "Q3_K_M": "Q3_K_M",
    "Q3_K_L": "Q3_K_L",
    "Q4_K_S": "Q4_K_S",
    "Q4_K_M": "Q4_K_M",
    "Q5_K_S": "Q5_K_S",
    "Q5_K_M": "Q5_K_M",
    "Q6_K": "Q6_K",
}
SOURCE_TYPES = frozenset({"F16", "BF16", "F32"})
_PROGRESS = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")
_TAIL_LINES = 20


class QuantizeError(PowerError):
    """The quantizer child failed; the message carries its last output lines."""


def normalize_type(name: str) -> str:
    """``q4_k_m`` -> ``Q4_K_M``; an unknown type is a 400."""
    upper = name.strip().upper()
    if upper not in QUANT_TYPES:
        raise InvalidRequestError(f"unsupported quantization type {name}")
    return upper


def quantize(src: Path, dst: Path, qtype: str) -> Iterator[tuple[int, int]]:
    """Quantize ``src`` into ``dst``, yielding (tensors done, tensors total) as it goes."""
    qtype = normalize_type(qtype)
    cmd = [sys.executable, "-m", "power.store.quantize", str(src), str(dst), qtype]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    log.info("quantizing %s to %s (pid %d)", src.name, qtype, proc.pid)
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    try:
        if proc.stderr is None:
            raise RuntimeError("stderr was not piped")
        for line in proc.stderr:
            tail.append(line.rstrip())
            if m := _PROGRESS.match(line):
                yield int(m.group(1)), int(m.group(2))
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    if code != 0:
        detail = "\n".join(x for x in tail if x.strip())
        raise QuantizeError(f"quantization to {qtype} failed (exit {code}): {detail}")


def _main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[2].upper() not in QUANT_TYPES:
        sys.stderr.write(
            f"usage: python -m power.store.quantize SRC DST {{{','.join(QUANT_TYPES)}}}\n"
        )
        return 2
    src, dst, qtype = argv
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{QUANT_TYPES[qtype.upper()]}")
    params.nthread = max(1, (os.cpu_count() or 2) // 2)
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dst)
        sys.stderr.write(f"llama_model_quantize returned {rc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
