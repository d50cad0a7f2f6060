"""Frames on their way to the gateway, coalesced when tokens come fast.

The inference thread pushes events; the event loop writes them. The ``Tokens`` of one request
merge into one frame, even when other requests' tokens come in between. After a flush, further
ordinary tokens wait up to ``COALESCE_S`` to travel together: the first tokens of a request and
every other message still go out at once, so the time to the first token never changes and at
most ``COALESCE_S`` is added to when a later token is seen. Each frame costs the runner's loop,
the gateway and the client a wake-up and a loopback send (the send is most of the gateway's
CPU per frame); on a GPU that is more than a token's compute (~1.5 ms), and on a CPU those
wake-ups preempt the compute threads of the runner. 50 ms (20 frames a second, smooth to a
reader) took a 128-token CPU answer from 68 NDJSON lines to 27 and decode through the gateway
from 1.05-1.12x to 1.15-1.17x the in-process rate (docs/performance.md). Once ``aclose`` has
sent what was queued and closed the stream, pushes are dropped (``closed``): a thread that
outlives the runner's wind-down sends nothing into a closed transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from proto import FrameWriter, Msg, Tokens

__all__ = ["COALESCE_S", "Outbox"]

COALESCE_S = 0.050

_IDLE, _DELAYED, _NOW = 0, 1, 2


class Outbox:
    def __init__(self, writer: FrameWriter, loop: asyncio.AbstractEventLoop) -> None:
        self._writer = writer
        self._loop = loop
        self._pending: list[Msg] = []
        self._state = _IDLE
        self._last_flush = 0.0
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def push_threadsafe(self, msg: Msg) -> None:
        self.push_many_threadsafe([msg])

    def push_many_threadsafe(self, msgs: list[Msg]) -> None:
        """From any thread: queue ``msgs`` in order (e.g. one batch step's events)."""
        if not msgs or self._closed:
            return
        urgent = any(not isinstance(m, Tokens) or m.first for m in msgs)
        with self._lock:
            self._pending.extend(msgs)
            if self._state == _NOW or (self._state == _DELAYED and not urgent):
                return
            wait = 0.0 if urgent else self._last_flush + COALESCE_S - time.monotonic()
            self._state = _NOW if wait <= 0 else _DELAYED
        try:
            if wait <= 0:
                self._loop.call_soon_threadsafe(self.flush)
            else:
                self._loop.call_soon_threadsafe(self._loop.call_later, wait, self.flush)
        except RuntimeError:  # the loop is gone: the process is exiting anyway
            pass

    def push(self, msg: Msg) -> None:
        """From the loop's own thread: write at once."""
        self.flush()
        if not self._closed:
            self._writer.write(msg)

    def flush(self) -> None:
        with self._lock:
            msgs, self._pending = self._pending, []
            self._state = _IDLE
            if msgs:
                self._last_flush = time.monotonic()
        if msgs and not self._closed:
            self._writer.write_many(_coalesce(msgs))

    async def aclose(self) -> None:
        """Send what is queued, then close the stream (the peer may be gone); idempotent."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._writer.drain()
        self._writer.close()
        await self._writer.wait_closed()


def _coalesce(msgs: list[Msg]) -> list[object]:
    """Merge each request's ``Tokens``, also when other requests' frames interleave them."""
    out: list[object] = []
    open_at: dict[int, int] = {}  # request id -> index in `out` of its Tokens still open
    for msg in msgs:
        if isinstance(msg, Tokens):
            at = open_at.get(msg.id)
            prev = out[at] if at is not None else None
            if at is not None and isinstance(prev, Tokens):
                out[at] = Tokens(
                    id=msg.id,
                    text=prev.text + msg.text,
                    ids=prev.ids + msg.ids,
                    logprobs=prev.logprobs + msg.logprobs,
                    first=prev.first,
                )
                continue
            open_at[msg.id] = len(out)
        else:
            req_id = getattr(msg, "id", None)
            if req_id is not None:
                open_at.pop(req_id, None)  # nothing of this id may move past its Done
        out.append(msg)
    return out
