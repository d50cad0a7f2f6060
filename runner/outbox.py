"""Frames on their way to the gateway, coalesced when they pile up.

The inference thread pushes events; the event loop writes them. While the loop is busy,
consecutive ``Tokens`` of one request merge into one frame, so a fast model costs fewer frames
and fewer wake-ups on both sides of the socket.
"""

from __future__ import annotations

import asyncio
import threading

from proto import FrameWriter, Msg, Tokens

__all__ = ["Outbox"]


class Outbox:
    def __init__(self, writer: FrameWriter, loop: asyncio.AbstractEventLoop) -> None:
        self._writer = writer
        self._loop = loop
        self._pending: list[Msg] = []
        self._scheduled = False
        self._lock = threading.Lock()
        self.closed = False

    def push_threadsafe(self, msg: Msg) -> None:
        with self._lock:
            self._pending.append(msg)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self.flush)
        except RuntimeError:  # the loop is gone: the process is exiting anyway
            pass

    def push(self, msg: Msg) -> None:
        """From the loop's own thread: write at once."""
        self.flush()
        if not self.closed:
            self._writer.write(msg)

    def flush(self) -> None:
        with self._lock:
            msgs, self._pending = self._pending, []
            self._scheduled = False
        if msgs and not self.closed:
            self._writer.write_many(_coalesce(msgs))


def _coalesce(msgs: list[Msg]) -> list[object]:
    out: list[object] = []
    for msg in msgs:
        prev = out[-1] if out else None
        if isinstance(msg, Tokens) and isinstance(prev, Tokens) and prev.id == msg.id:
            out[-1] = Tokens(
                id=msg.id,
                text=prev.text + msg.text,
                ids=prev.ids + msg.ids,
                logprobs=prev.logprobs + msg.logprobs,
                first=prev.first,
            )
        else:
            out.append(msg)
    return out
