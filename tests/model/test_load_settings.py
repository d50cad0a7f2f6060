"""Load settings reach llama.cpp: mmap/mlock as ``load_mode``, the CPU mode, the engine's facts,
and what a load reports: its progress, the layers and bytes it placed on GPUs.

Each test starts the real runner with SmolLM2 and reads what the kernel says of the process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import resource
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from power.supervisor import RunnerProcess
from proto import CpuMode, Done, Generate, LoadParams, Sampling, Tokens
from runner.llama_compat import installed_version
from tests.support.spawn import quiet_start_lasting_policies, thread_policies

pytestmark = [pytest.mark.anyio, pytest.mark.model]


@contextlib.asynccontextmanager
async def runner(gguf: Path, **params: Any) -> AsyncIterator[RunnerProcess]:
    proc = await RunnerProcess.start(
        LoadParams(model_path=str(gguf), n_ctx=512, **params),
        model="smollm2",
        engine="llama",
        load_timeout_s=60,
    )
    try:
        yield proc
    finally:
        await proc.aclose(grace_s=5, term_grace_s=5)


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def kib(value: str) -> int:
    return int(value.split()[0])


def mapped(pid: int, path: Path) -> bool:
    return str(path) in Path(f"/proc/{pid}/maps").read_text()


async def answer(proc: RunnerProcess) -> str:
    """Eight greedy tokens after "The sky is"; fails unless the request ends with ``Done``."""
    stream = proc.client.open(
        lambda i: Generate(
            id=i, prompt="The sky is", sampling=Sampling(temperature=0.0), num_predict=8
        )
    )
    text, done = [], None
    while not stream.finished:
        for msg in await stream.next_batch():
            if isinstance(msg, Tokens):
                text.append(msg.text)
            elif isinstance(msg, Done):
                done = msg
    assert done is not None
    assert done.stats.eval_tokens == 8
    return "".join(text)


def _mlock_allowed(size: int) -> bool:
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return os.geteuid() == 0 or soft == resource.RLIM_INFINITY or soft >= size


@pytest.fixture
def size(smollm2_gguf: Path) -> int:
    return smollm2_gguf.stat().st_size


async def test_use_mlock_locks_the_weights_in_memory(smollm2_gguf: Path, size: int) -> None:
    if not _mlock_allowed(size):
        pytest.skip(f"RLIMIT_MEMLOCK allows less than the model's {size} bytes for this user")
    async with runner(smollm2_gguf, use_mlock=True) as proc:
        assert kib(status(proc.pid)["VmLck"]) * 1024 >= size * 0.9
        assert await answer(proc)
    async with runner(smollm2_gguf) as proc:
        assert kib(status(proc.pid)["VmLck"]) == 0


async def test_use_mmap_false_reads_the_weights_into_anonymous_memory(
    smollm2_gguf: Path, size: int
) -> None:
    async with runner(smollm2_gguf) as proc:  # the default maps the file
        assert mapped(proc.pid, smollm2_gguf)
    async with runner(smollm2_gguf, use_mmap=False) as proc:
        assert not mapped(proc.pid, smollm2_gguf)
        assert kib(status(proc.pid)["RssAnon"]) * 1024 >= size * 0.9
        assert await answer(proc)


@pytest.mark.parametrize("mode", list(CpuMode))
async def test_every_cpu_mode_loads_and_answers(smollm2_gguf: Path, mode: CpuMode) -> None:
    async with runner(smollm2_gguf, cpu_mode=mode) as proc:
        assert proc.hello is not None
        assert proc.ready is not None
        loaded = proc.hello.auto_cpu_mode if mode == CpuMode.AUTO else mode
        assert proc.ready.cpu_mode == loaded != CpuMode.AUTO
        filters = int(status(proc.pid).get("Seccomp_filters", "0"))
        assert (filters > 0) == (loaded == CpuMode.NO_AMX)  # AMX kept out by a seccomp filter
        assert await answer(proc)


async def test_a_batch_beyond_the_context_is_clamped_to_it_and_the_model_answers(
    smollm2_gguf: Path,
) -> None:
    """``num_batch`` 2**31 - 1 used to size the batch's arrays as asked: the allocation failed
    and the runner died of SIGSEGV while loading."""
    async with runner(smollm2_gguf, n_batch=2**31 - 1) as proc:
        assert proc.ready is not None
        assert await answer(proc)


async def test_hello_names_the_engine_and_the_cpu_features_it_uses(smollm2_gguf: Path) -> None:
    async with runner(smollm2_gguf) as proc:
        assert proc.hello is not None
        assert proc.hello.engine == f"llama-cpp-python {installed_version()}"
        assert proc.hello.system_info.startswith("CPU :")
        assert "REPACK = 1" in proc.hello.system_info


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux thread policies")
async def test_a_quietly_started_runner_loads_and_computes_on_plain_threads(
    smollm2_gguf: Path,
) -> None:
    """A spare's quiet start (``runner.quiet``) idles only its imports' thread, asleep after
    them: the threads that load and decode, llama.cpp's compute threads among them, are plain
    ones."""
    proc = await RunnerProcess.launch(engine="llama", quiet_start=True, timeout_s=60)
    try:
        await proc.load(
            LoadParams(model_path=str(smollm2_gguf), n_ctx=512), model="s", load_timeout_s=60
        )
        assert await answer(proc)
        assert len(thread_policies(proc.pid)) >= 4  # with the loop, inference, a compute one
        plain = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))
        assert quiet_start_lasting_policies(proc.pid) == {plain}
    finally:
        await proc.aclose(grace_s=5, term_grace_s=5)


async def test_a_real_load_reports_progress_and_without_a_gpu_places_nothing_on_one(
    smollm2_gguf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="power.supervisor.process")
    proc = await RunnerProcess.start(
        LoadParams(model_path=str(smollm2_gguf), n_ctx=512, n_gpu_layers=-1),  # all it can
        model="smollm2",
        engine="llama",
        load_timeout_s=60,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),  # no GPU, whatever the build
    )
    try:
        progress = [r for r in caplog.records if "runner load progress" in r.getMessage()]
        assert progress  # llama.cpp's progress callback, through the runner, at the gateway
        assert proc.ready is not None
        assert (proc.ready.gpu_layers, proc.ready.memory.vram) == (0, 0)
        # The runner read its placement from llama.cpp's log: the lines are still there.
        placed = [line for line in proc.stderr_lines if "model placed:" in line]
        assert len(placed) == 1
        assert re.search(r"CPU_Mapped model \d+\.\d MiB.* CPU KV \d+\.\d MiB", placed[0])
        assert placed[0].endswith("; on GPUs: 0 layers, 0.0 MiB")
    finally:
        await proc.aclose(grace_s=5, term_grace_s=5)
