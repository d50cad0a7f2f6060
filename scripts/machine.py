"""The machine a benchmark ran on, for its JSON: every figure belongs to the CPU it came from.

    from machine import Machine, publish  # (scripts/ is on sys.path when a script runs)
    machine = Machine.probe()            # before the timed work: CPU, llama.cpp, load average
    machine.match_runner_cpu_mode()      # before an in-process baseline loads a model
    ...
    results["machine"] = machine.finish()  # after it: the load average again
    publish(results, args.out)           # the JSON, printed and written to docs/

``probe`` reads ``/proc/cpuinfo`` through ``runner.cpu`` (the model, the flags that pick
llama.cpp's kernels, and what ``cpu_extra_buffers = auto`` means here) and starts one real
runner to take its ``Hello`` (the engine, llama.cpp's system info, the CPU mode it would choose),
so the record says what the runner itself saw. ``family`` names the table of
``docs/performance.md`` a figure goes in, e.g. "AMD EPYC (Zen 4), AVX-512, no AMX".

    python scripts/machine.py          # prints this machine's record
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runner.stdcxx import load_stdcxx_first

# As the runner does, before llama.cpp's libraries load: an in-process baseline's load died of
# SIGSEGV in the tokenizer's std::regex on a device's Xeon without it (runner.stdcxx)
load_stdcxx_first()
# and as runner/__main__ does: numpy's OpenBLAS threads, which spin after they start and after
# its BLAS calls, are no part of what a baseline measures (a user's setting still wins)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from power.supervisor.process import RunnerProcess  # noqa: E402
from proto import CpuMode  # noqa: E402
from runner.amx import deny_amx  # noqa: E402
from runner.cpu import amx_denial_possible, auto_mode, read_cpu  # noqa: E402

__all__ = ["Machine", "publish"]

_FEATURES = {  # what decides llama.cpp's CPU kernels, by the /proc/cpuinfo flag that shows it
    "AVX2": "avx2",
    "AVX-512": "avx512f",
    "AVX-512 VNNI": "avx512_vnni",
    "AVX-512 BF16": "avx512_bf16",
    "AMX": "amx_tile",
    "NEON": "asimd",
    "SVE": "sve",
}


@dataclass
class Machine:
    cpu_model: str
    arch: str
    features: list[str]
    family: str
    cores: int  # logical CPUs this process may use
    cpu_mode_auto: str  # runner.cpu.auto_mode here
    cpu_mode_why: str
    runner_engine: str = ""  # from the runner's Hello
    runner_system_info: str = ""
    runner_auto_cpu_mode: str = ""
    loadavg_before: list[float] = field(default_factory=list)
    loadavg_after: list[float] = field(default_factory=list)
    baseline_cpu_mode: str = ""  # an in-process baseline's kernels (match_runner_cpu_mode)

    @classmethod
    def probe(cls, *, runner: bool = True) -> Machine:
        cpu = read_cpu()
        mode, why = auto_mode(cpu, amx_denial=amx_denial_possible())
        features = [name for name, flag in _FEATURES.items() if flag in cpu.flags]
        found = cls(
            cpu_model=cpu.model or cpu.machine,
            arch=cpu.machine,
            features=features,
            family=_family(cpu.model or cpu.machine, features),
            cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0,
            cpu_mode_auto=str(mode),
            cpu_mode_why=why,
        )
        if runner:
            found.runner_engine, found.runner_system_info, found.runner_auto_cpu_mode = asyncio.run(
                _hello()
            )
        found.loadavg_before = [round(x, 2) for x in os.getloadavg()]
        return found

    def match_runner_cpu_mode(self) -> None:
        """Give this process (and the children it starts from now on) the CPU mode a runner's
        auto mode picks here, so an in-process baseline runs the kernels the runner runs. On an
        AMX CPU that is ``no-amx``: llama.cpp's AMX kernels crash there (llama.cpp #20824, the
        CPU issue), and the runner keeps AMX out (``runner.amx``).
        Call it before the first model loads in this process."""
        self.baseline_cpu_mode = str(CpuMode.EXTRA)
        if self.cpu_mode_auto == str(CpuMode.NO_AMX):
            why = deny_amx()
            if why:
                raise SystemExit(f"cannot keep AMX from the in-process baseline: {why}")
            self.baseline_cpu_mode = str(CpuMode.NO_AMX)

    def finish(self) -> dict[str, object]:
        """The record, with the load average now (after the timed work)."""
        self.loadavg_after = [round(x, 2) for x in os.getloadavg()]
        return asdict(self)


def _family(model: str, features: list[str]) -> str:
    """E.g. "AMD EPYC (Zen 4), AVX-512, no AMX": the CPU and what its kernels may use."""
    simd = "AVX-512" if "AVX-512" in features else "AVX2" if "AVX2" in features else ""
    if "NEON" in features:
        simd = "SVE" if "SVE" in features else "NEON"
    if model.startswith("AMD EPYC") and "AVX-512" in features and "AVX-512 BF16" in features:
        model = "AMD EPYC (Zen 4)"  # Zen 4 is the first EPYC with AVX-512 (BF16 included)
    parts = [model, simd] if simd else [model]
    if "AVX2" in features:  # x86: say whether AMX is there, it changes the CPU mode
        parts.append("AMX" if "AMX" in features else "no AMX")
    return ", ".join(parts)


def publish(results: dict[str, Any], out: str | Path | None) -> None:
    """Print ``results`` as JSON and write them to ``out`` (its folder made) when given."""
    text = json.dumps(results, indent=2)
    sys.stdout.write(text + "\n")
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


async def _hello() -> tuple[str, str, str]:
    proc = await RunnerProcess.launch(engine="llama")
    try:
        hello = proc.hello
        assert hello is not None  # (launch returns after it)
        return hello.engine, hello.system_info, str(hello.auto_cpu_mode)
    finally:
        await proc.aclose()


if __name__ == "__main__":
    print(json.dumps(Machine.probe().finish(), indent=2))  # noqa: T201
