"""A quiet start (``runner.quiet``) runs its work on a thread of the ``SCHED_IDLE`` policy, and
every other thread keeps the policy it had."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from runner.quiet import run_quietly

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
    assert "quiet-start" not in {t.name for t in threading.enumerate()}


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
