"""The runners' CPU mode is a pure function of /proc/cpuinfo and the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from power.supervisor.policy import default_cpu_mode, requested_cpu_mode
from proto import PROTOCOL_VERSION, CpuMode, Hello
from runner.cpu import CpuInfo, auto_mode, parse_cpuinfo

CPUINFO = Path(__file__).parent / "cpuinfo"


def cpu(name: str, machine: str = "x86_64") -> CpuInfo:
    model, flags = parse_cpuinfo((CPUINFO / name).read_text())
    return CpuInfo(model=model, flags=flags, machine=machine)


EPYC = cpu("amd-epyc-zen4.txt")
SAPPHIRE_RAPIDS = cpu("intel-xeon-sapphire-rapids.txt")
NEOVERSE = cpu("arm-neoverse-v1.txt", "aarch64")


def test_the_cpuinfo_texts_read_as_their_cpus() -> None:
    assert EPYC.model == "AMD EPYC"
    assert "avx512_vnni" in EPYC.flags
    assert not EPYC.has_amx
    assert SAPPHIRE_RAPIDS.model == "Intel(R) Xeon(R) Platinum 8488C"
    assert SAPPHIRE_RAPIDS.has_amx
    assert {"amx_tile", "amx_int8", "avx512f"} <= SAPPHIRE_RAPIDS.flags
    assert NEOVERSE.model == ""
    assert {"asimd", "sve", "i8mm"} <= NEOVERSE.flags
    assert not NEOVERSE.has_amx
    assert NEOVERSE.describe() == "aarch64 (asimd asimddp i8mm sve)"
    assert "amx_tile amx_int8" in SAPPHIRE_RAPIDS.describe()


@pytest.mark.parametrize(
    ("info", "denial", "mode"),
    [
        (EPYC, True, CpuMode.EXTRA),  # repacked weights measured faster here
        (NEOVERSE, False, CpuMode.EXTRA),
        (SAPPHIRE_RAPIDS, True, CpuMode.NO_AMX),  # AMX kernels crash; the other repacks stay
        (SAPPHIRE_RAPIDS, False, CpuMode.PLAIN),  # no way to keep AMX out alone
        (CpuInfo(model="", flags=frozenset()), False, CpuMode.EXTRA),  # nothing read
    ],
)
def test_auto_per_cpu(info: CpuInfo, denial: bool, mode: CpuMode) -> None:
    chosen, why = auto_mode(info, amx_denial=denial)
    assert chosen == mode
    assert ("AMX" in why) == info.has_amx


@pytest.mark.parametrize(
    ("setting", "requested", "default"),
    [
        ("auto", CpuMode.AUTO, CpuMode.NO_AMX),  # what the runner said AUTO means there
        ("on", CpuMode.EXTRA, CpuMode.EXTRA),  # forced: AMX included
        ("off", CpuMode.PLAIN, CpuMode.PLAIN),
    ],
)
def test_the_setting_on_a_sapphire_rapids_runner(
    setting: str, requested: CpuMode, default: CpuMode
) -> None:
    auto, why = auto_mode(SAPPHIRE_RAPIDS, amx_denial=True)
    hello = Hello(protocol=PROTOCOL_VERSION, pid=1, auto_cpu_mode=auto, auto_cpu_mode_why=why)
    assert requested_cpu_mode(setting) == requested
    mode, reason = default_cpu_mode(setting, hello)
    assert mode == default
    assert reason.startswith(f"cpu_extra_buffers = {setting}")
