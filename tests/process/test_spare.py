"""The spare runner (``power.supervisor.spare``): started quietly (its imports in the CPU's idle
time), at once beside a load that follows another closely, and never in the way of a load when
that start is slow.

Real ``python -m runner --engine fake:echo`` children; a start that a busy machine holds back
is one held with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import psutil
import pytest

from power.supervisor import RunnerProcess
from power.supervisor.spare import REFILL_DELAY_S, SparePool
from tests.support.spawn import (
    alive,
    model,
    params,
    quiet_start_lasting_policies,
    settings,
    thread_policies,
)
from tests.support.wait import wait_for

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="a quiet start needs Linux's thread policies"
    ),
]


def quiet_children() -> list[psutil.Process]:
    """This test's runners launched with a quiet start."""
    found = []
    for child in psutil.Process().children():
        try:
            if "--quiet-start" in child.cmdline():
                found.append(child)
        except psutil.Error:
            pass
    return found


def plain_children() -> list[psutil.Process]:
    """This test's runners launched without a quiet start."""
    found = []
    for child in psutil.Process().children():
        try:
            argv = child.cmdline()
        except psutil.Error:
            continue
        if "runner" in argv and "--quiet-start" not in argv:
            found.append(child)
    return found


def settled(pid: int, seen: dict[int, float]) -> bool:
    """True once the process sleeps and its CPU time did not move since the last call."""
    proc = psutil.Process(pid)
    times = proc.cpu_times()
    now = times.user + times.system
    before, seen[pid] = seen.get(pid), now
    return proc.status() == psutil.STATUS_SLEEPING and before == now


@asynccontextmanager
async def pool_of(
    tmp_path: Path, *, refill_delay_s: float = REFILL_DELAY_S
) -> AsyncIterator[SparePool]:
    pool = SparePool(settings(tmp_path, runner_engine="fake:echo"), refill_delay_s=refill_delay_s)
    pool.start()
    try:
        yield pool
    finally:
        await pool.aclose()


async def settled_spare() -> int:
    """The pid of the pool's one spare, once it has said Hello and sits idle."""
    await wait_for(lambda: len(quiet_children()) == 1, timeout_s=30)
    pid = quiet_children()[0].pid
    seen: dict[int, float] = {}
    await wait_for(lambda: settled(pid, seen), timeout_s=60, interval_s=0.3)
    return pid


@contextmanager
def stopped(proc: psutil.Process) -> Iterator[None]:
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


async def test_a_quiet_start_imports_in_idle_time_and_every_lasting_thread_is_plain(
    tmp_path: Path,
) -> None:
    plain = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))
    seen: set[tuple[int, int]] = set()
    done = threading.Event()

    def watch() -> None:  # every thread's policy, as often as it can, until the Hello
        while not done.is_set():
            for child in quiet_children():
                seen.update(thread_policies(child.pid).values())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        runner = await RunnerProcess.launch(engine="fake:echo", quiet_start=True, timeout_s=60)
    finally:
        done.set()
        watcher.join()
    try:
        assert os.SCHED_IDLE in {policy for policy, _ in seen}  # the imports' thread
        assert quiet_start_lasting_policies(runner.pid) == {plain}
    finally:
        await runner.aclose()


async def test_back_to_back_loads_launch_the_next_spare_quietly_beside_the_load(
    tmp_path: Path,
) -> None:
    """A load long after the previous one leaves the next spare to the refill delay (here
    longer than the test), so that no start competes with it; a load that follows another
    within that delay launches the next spare at once, quietly."""
    async with pool_of(tmp_path, refill_delay_s=600) as pool:
        first = await settled_spare()
        a = await pool(params(model(tmp_path)), model="m:latest")
        try:
            assert a.pid == first

            def others() -> list[int]:
                return [p.pid for p in quiet_children() if p.pid != a.pid]

            assert others() == []  # the next one waits for the delay
            b = await pool(params(model(tmp_path, "n")), model="n:latest")
            try:
                assert "--quiet-start" not in psutil.Process(b.pid).cmdline()  # its own
                assert len(others()) == 1  # launched beside b's load
            finally:
                await b.aclose()
        finally:
            await a.aclose()


async def test_a_spare_held_back_in_its_start_does_not_hold_a_load_and_is_the_next_spare(
    tmp_path: Path,
) -> None:
    async with pool_of(tmp_path) as pool:
        await wait_for(lambda: len(quiet_children()) == 1, timeout_s=30)
        held = quiet_children()[0]  # (still starting: it takes far longer than the wait)
        with stopped(held):
            first = await pool(params(model(tmp_path)), model="m:latest")
        try:
            assert first.pid != held.pid
            assert "--quiet-start" not in psutil.Process(first.pid).cmdline()
            assert await settled_spare() == held.pid
            second = await pool(params(model(tmp_path, "n")), model="n:latest")
            try:
                assert second.pid == held.pid
            finally:
                await second.aclose()
        finally:
            await first.aclose()
    assert not held.is_running()


async def test_a_plain_start_that_loses_the_race_while_still_starting_is_stopped(
    tmp_path: Path,
) -> None:
    """The spare says Hello first: the runner the load started beside it would go on starting
    at full priority beside the load, so it is stopped rather than kept."""
    async with pool_of(tmp_path) as pool:
        await wait_for(lambda: len(quiet_children()) == 1, timeout_s=30)
        spare = quiet_children()[0]
        with stopped(spare):
            load = asyncio.ensure_future(pool(params(model(tmp_path)), model="m:latest"))
            await wait_for(lambda: len(plain_children()) == 1, timeout_s=30)
            own = plain_children()[0]
            os.kill(own.pid, signal.SIGSTOP)  # held in its start until the pool stops it
        try:
            runner = await asyncio.wait_for(load, 60)
            try:
                assert runner.pid == spare.pid
                await wait_for(lambda: not alive(own.pid), timeout_s=30)
            finally:
                await runner.aclose()
        finally:
            if alive(own.pid):
                os.kill(own.pid, signal.SIGCONT)
