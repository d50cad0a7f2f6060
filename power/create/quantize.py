"""Quantization with llama.cpp's quantizer, always in a child process.

``python -m runner.quantize SRC DST TYPE`` imports llama-cpp-python and quantizes; the
gateway never imports ``llama_cpp`` itself. :func:`quantize` runs that child, turns the
quantizer's per-tensor log lines (``[  12/ 272] blk.0…``) into progress, and reaps it whatever
happens (a closed iterator kills it). Exit codes: 0 done, 1 quantizer failed, 2 bad arguments.
"""

from __future__ import annotations

import collections
import logging
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


def quantize(
    src: Path, dst: Path, qtype: str, *, allow_requantize: bool = False
) -> Iterator[tuple[int, int]]:
    """Quantize ``src`` into ``dst``, yielding (tensors done, tensors total) as it goes.

    ``allow_requantize`` lets an already quantized source through (benchmarks make test
    models that way; a model a user creates is quantized only from F16/BF16/F32)."""
    qtype = normalize_type(qtype)
    cmd = [sys.executable, "-m", "runner.quantize", str(src), str(dst), QUANT_TYPES[qtype]]
    if allow_requantize:
        cmd.append("--allow-requantize")
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
