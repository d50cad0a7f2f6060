"""Which CPU mode a runner loads its model in: a pure choice from the CPU's flags.

llama.cpp keeps a model's weights in "extra buffer types" when it can: layouts repacked for the
CPU's fastest matrix kernels (AVX2/AVX-512 and ARM repacks, and AMX tiles in a build made on an
AMX CPU). On CPUs with AMX (Intel Sapphire Rapids and later) the AMX kernels crash
(``ggml_backend_amx_mul_mat``, llama.cpp #20824, Ollama #17205) and were no faster anyway
(Ollama #9203), so there the default leaves them out. Everywhere else the repacked layouts are
llama.cpp's default and measured no slower (``scripts/bench_cpu_mode.py``,
``docs/performance.md``).

The gateway's setting ``cpu_extra_buffers`` (``A3S_POWER_CPU_EXTRA_BUFFERS``) arrives as
``LoadParams.cpu_mode``: ``auto`` (``CpuMode.AUTO``: resolved here, on the machine that runs
the model), ``on`` (``EXTRA``: llama.cpp's default, AMX included) or ``off`` (``PLAIN``).
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass

from proto import CpuMode

__all__ = [
    "AMX_FLAGS",
    "CpuInfo",
    "amx_denial_possible",
    "auto_mode",
    "parse_cpuinfo",
    "read_cpu",
]

AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16"})
_SHOWN = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
          "asimd", "asimddp", "i8mm", "sve", "sve2", "sme")  # fmt: skip


@dataclass(frozen=True, slots=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    machine: str = ""

    @property
    def has_amx(self) -> bool:
        return bool(self.flags & AMX_FLAGS)

    def describe(self) -> str:
        """The model and the flags that decide llama.cpp's kernels, for the start-up log."""
        shown = " ".join(f for f in _SHOWN if f in self.flags) or "no SIMD flags read"
        return f"{self.model or self.machine or 'unknown CPU'} ({shown})"


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """The model name and the flags of ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``)."""
    model = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model, frozenset(flags)


def read_cpu(path: str = "/proc/cpuinfo") -> CpuInfo:
    """This machine's CPU; no flags where ``path`` cannot be read (macOS, some containers)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            model, flags = parse_cpuinfo(f.read())
    except OSError:
        model, flags = platform.processor(), frozenset()
    return CpuInfo(model=model, flags=flags, machine=platform.machine())


def amx_denial_possible() -> bool:
    """Runners can keep AMX out with a seccomp filter (``runner.amx``): x86-64 Linux."""
    return sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")


def auto_mode(cpu: CpuInfo, *, amx_denial: bool) -> tuple[CpuMode, str]:
    """What ``CpuMode.AUTO`` means on ``cpu``, and why.

    ``amx_denial``: the runner can keep AMX out while keeping the other repacked layouts
    (``CpuMode.NO_AMX``, ``runner.amx``); without it an AMX CPU gets plain buffers.
    """
    if cpu.has_amx:
        why = "AMX present: llama.cpp's AMX kernels crash (llama.cpp #20824)"
        if amx_denial:
            return CpuMode.NO_AMX, f"{why}; the other repacked weights are kept"
        return CpuMode.PLAIN, why
    return CpuMode.EXTRA, "llama.cpp's default: repacked weights"
