"""Waiting for a positive, observable state: poll a predicate until it holds or time runs out.

A test never sleeps a fixed time to prove that something did *not* happen; it waits here for a
state that shows the system is where the negative can be checked, then checks it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["wait_for", "wait_until"]


def _failure(timeout_s: float) -> AssertionError:
    return AssertionError(f"condition not met within {timeout_s}s")


def wait_until(pred: Callable[[], bool], timeout_s: float = 10.0, interval_s: float = 0.02) -> None:
    """Poll ``pred`` until it holds; fail the test when ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise _failure(timeout_s)
        time.sleep(interval_s)


async def wait_for(
    pred: Callable[[], bool], timeout_s: float = 10.0, interval_s: float = 0.02
) -> None:
    """``wait_until`` for async tests: the event loop runs while ``pred`` is polled."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise _failure(timeout_s)
        await asyncio.sleep(interval_s)
