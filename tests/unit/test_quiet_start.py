"""A quiet start (``runner.quiet``) runs its work on a thread of the ``SCHED_IDLE`` policy, and
every other thread keeps the policy it had."""

from __future__ import annotations

import functools
import os
import sys
import threading
from pathlib import Path

import pytest

from runner.quiet import run_quietly
from tests.support.wait import wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="a thread has a policy of its own on Linux"
)


def test_the_work_runs_on_an_idle_policy_thread_and_the_caller_keeps_its_policy() -> None:
    mine = os.sched_getscheduler(0)
    assert mine != os.SCHED_IDLE
    seen: list[tuple[str, int]] = []
    run_quietly(lambda: seen.append((threading.current_thread().name, os.sched_getscheduler(0))))
    assert seen == [("quiet-start", os.SCHED_IDLE)]
    assert os.sched_getscheduler(0) == mine


def test_the_idle_thread_sleeps_after_the_work_instead_of_ending() -> None:
    """An idle-policy thread's end (glibc handing back its stack under the memory-map lock)
    would wait for an idle core, and the process's other threads for it."""
    run_quietly(lambda: None)
    parked = [t for t in threading.enumerate() if t.name == "quiet-start"]
    assert parked
    for thread in parked:
        assert thread.is_alive()
        assert thread.daemon  # (it does not hold the interpreter's exit)
        tid = thread.native_id
        assert tid is not None
        # asleep, once it has had a core (on a busy machine an idle-policy thread waits for one)
        wait_until(functools.partial(_asleep, tid))
        assert os.sched_getscheduler(tid) == os.SCHED_IDLE
        # named where ps and /proc look, so a check of the runner's threads can tell it apart
        assert Path(f"/proc/self/task/{tid}/comm").read_text().strip() == "quiet-start"


def _asleep(tid: int) -> bool:
    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "S"


def test_threads_the_work_starts_are_quiet_and_later_ones_are_not() -> None:
    """What the work starts is as quiet as it (so a quiet start must not start lasting
    threads); the runner's lasting threads start after it, with the process's policy."""
    inner: list[int] = []

    def start_one() -> None:
        t = threading.Thread(target=lambda: inner.append(os.sched_getscheduler(0)))
        t.start()
        t.join()

    run_quietly(start_one)
    start_one()
    assert inner == [os.SCHED_IDLE, os.sched_getscheduler(0)]
