"""The load deadline is a stall deadline: a slow load that reports progress is waited for, a
silent one is killed (real ``python -m runner --engine fake:…`` behind ``RunnerProcess``)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import psutil
import pytest

from power.errors import RunnerTimeoutError
from power.supervisor import RunnerProcess
from proto import Load, Shutdown
from tests.support.spawn import model, params

pytestmark = pytest.mark.anyio


async def test_a_slow_load_that_reports_progress_outlasts_the_stall_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="power.supervisor.process")
    m = model(tmp_path)
    # Three seconds in ten steps: twice the deadline in all, a fifth of it between reports.
    runner = await RunnerProcess.start(
        params(m), model=m.name, engine="fake:echo?load_delay=3&load_steps=10", load_timeout_s=1.5
    )
    try:
        assert runner.ready is not None
        progress = [
            r.getMessage()
            for r in caplog.records
            if r.name == "power.supervisor.process" and "load progress" in r.getMessage()
        ]
        assert progress == [
            f"runner load progress: model=m:latest pid={runner.pid} {10 * i}%" for i in range(1, 11)
        ]
    finally:
        await runner.aclose()


async def test_a_load_silent_for_longer_than_the_deadline_is_killed(tmp_path: Path) -> None:
    m = model(tmp_path)
    with pytest.raises(RunnerTimeoutError) as err:
        await RunnerProcess.start(
            params(m), model=m.name, engine="fake:echo?load_delay=3", load_timeout_s=1.5
        )
    assert str(err.value) == (
        "timed out waiting for model m:latest to load (at 0%): nothing from its runner for 1.5s"
    )
    pid = err.value.pid
    assert pid is not None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("how", ["gone", "shutdown"])
async def test_a_runner_left_while_it_loads_gives_the_load_up_and_exits(
    tmp_path: Path, how: str
) -> None:
    """A gateway that dies (its socket closes: SIGKILL, a crash) or says Shutdown while a
    runner loads: the runner stops loading and exits at once, not a minute later with the
    model's memory held until then."""
    m = model(tmp_path)
    runner = await RunnerProcess.launch(engine="fake:echo?load_delay=60&load_steps=600")
    try:
        runner.client.writer.write(Load(params=params(m)))
        await asyncio.sleep(0.3)  # loading now
        if how == "shutdown":
            runner.client.writer.write(Shutdown())
        else:
            runner.client.close()
        assert await asyncio.wait_for(runner.wait_exited(), 10) == 0
    finally:
        await runner.aclose()
