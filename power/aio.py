"""asyncio helpers the gateway shares: racing an awaitable against an event.

``until(aw, event)`` is the one way to "wait for this, unless that happens first": the loser is
cancelled and awaited (so its cleanup runs before the caller goes on), and a cancellation of
the caller itself is never swallowed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["Interrupted", "until"]

T = TypeVar("T")


class Interrupted(Exception):
    """``until``'s event was set before its awaitable finished."""


async def until(aw: Awaitable[T], event: asyncio.Event) -> T:
    """The result of ``aw``, unless ``event`` is set first: then ``aw`` is cancelled, its
    cleanup awaited, and ``Interrupted`` raised. If both finish together, ``aw`` wins."""
    task = asyncio.ensure_future(aw)
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})  # let it unwind; our own cancellation still propagates
    if task.cancelled():
        raise Interrupted
    return task.result()
