"""``until``: an awaitable raced against an event, the loser cancelled and awaited."""

from __future__ import annotations

import asyncio

import pytest

from power.aio import Interrupted, until

pytestmark = pytest.mark.anyio


async def test_the_awaitable_wins() -> None:
    async def work() -> int:
        await asyncio.sleep(0)
        return 7

    assert await until(work(), asyncio.Event()) == 7


async def test_the_event_wins_and_the_work_is_cancelled_and_cleaned_up() -> None:
    event = asyncio.Event()
    cleaned = asyncio.Event()

    async def work() -> int:
        try:
            await asyncio.Event().wait()  # forever
        finally:
            cleaned.set()
        return 1

    asyncio.get_running_loop().call_soon(event.set)
    with pytest.raises(Interrupted):
        await until(work(), event)
    assert cleaned.is_set()  # its finally ran before until() returned


async def test_an_event_already_set_interrupts_at_once() -> None:
    event = asyncio.Event()
    event.set()
    with pytest.raises(Interrupted):
        await until(asyncio.sleep(10), event)


async def test_errors_of_the_awaitable_propagate() -> None:
    async def work() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await until(work(), asyncio.Event())


async def test_cancelling_the_caller_cancels_both_and_is_not_swallowed() -> None:
    started, cleaned = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    caller = asyncio.ensure_future(until(work(), asyncio.Event()))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert caller.cancelled()
    assert cleaned.is_set()
