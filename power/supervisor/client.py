"""Request multiplexing over one runner socket.

Every request gets an id and a ``RequestStream``; a single reader task routes each incoming frame
to its stream by id. A stream ends with exactly one ``Done`` or ``Failed``, or with the error the
supervisor hands to ``fail_all`` when the runner dies. Closing a stream before its end sends
``Cancel`` synchronously, so it works from any cleanup path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import Callable

from power.errors import (
    ClientStalledError,
    InvalidRequestError,
    PowerError,
    RequestTooLargeError,
    RunnerError,
    RunnerLoadError,
)
from proto import (
    Cancel,
    ConnectionClosed,
    Detokenized,
    Done,
    Embeddings,
    ErrorCode,
    Failed,
    FrameError,
    FrameReader,
    FrameWriter,
    FromRunner,
    Msg,
    Ping,
    Pong,
    Tokenized,
    Tokens,
)

__all__ = ["RequestStream", "RunnerClient"]

log = logging.getLogger(__name__)

# What one request's stream may hold unread (bytes, as ``_size`` counts them) before its
# generation is stopped. A client that keeps a streamed answer's connection open but stops
# reading it would otherwise have the gateway keep every token made, for as long as the
# generation runs (with num_predict -1 and context shift: without end).
MAX_BACKLOG = 16 << 20


def failed_to_error(msg: Failed, *, model: str, pid: int | None) -> PowerError:
    if msg.code == ErrorCode.BAD_REQUEST:
        return InvalidRequestError(msg.message)
    if msg.code == ErrorCode.LOAD:
        return RunnerLoadError(msg.message, model=model, pid=pid)
    return RunnerError(msg.message, model=model, pid=pid)


def _shows_a_decode(msg: FromRunner) -> bool:
    """``msg`` exists only because a decode finished (a prompt evaluated, a token sampled)."""
    if isinstance(msg, Tokens | Embeddings):
        return True
    return isinstance(msg, Done) and msg.reason != "cancel" and msg.stats.prompt_eval_s > 0


_ENDS = (BaseException, Done, Tokenized, Detokenized)  # what ends a request


def _size(msg: Tokens) -> int:
    """About what ``msg`` holds in memory: its text, and 32 bytes a token id or logprob."""
    tops = sum(len(lp.top) for lp in msg.logprobs)
    return len(msg.text) + 32 * (len(msg.ids) + len(msg.logprobs) + tops)


class RequestStream:
    """The replies to one request, in order. Iterate with ``next_batch()``."""

    def __init__(self, client: RunnerClient, req_id: int) -> None:
        self.id = req_id
        self._client = client
        self._items: collections.deque[object] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.finished = False  # the terminal message was received
        self.closed = False
        self._backlog = 0  # the size of the Tokens not taken yet
        # called once when the request's end arrives (its runner sequence is free), which may be
        # long before a slow reader takes it
        self.on_end: Callable[[], None] | None = None

    def _put(self, item: object) -> None:
        if isinstance(item, Tokens):
            self._backlog += _size(item)
            if self._backlog > self._client.backlog_limit:
                self._stall()
                return
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.on_end is not None and isinstance(item, _ENDS):
            on_end, self.on_end = self.on_end, None
            on_end()

    def _stall(self) -> None:
        """Too much waits unread: stop the generation; the reader gets what came, then the error."""
        mib = self._backlog / (1 << 20)
        log.warning(
            "request %d to %s: %.0f MiB of streamed tokens waited unread; stopping its generation",
            self.id,
            self._client.model,
            mib,
        )
        self._client.cancel_nowait(self.id)
        self._client.forget(self.id)  # (what the runner sends before its cancel is dropped)
        self._put(
            ClientStalledError(
                f"the client stopped reading: {mib:.0f} MiB of the answer waited unread, so its"
                " generation was stopped"
            )
        )

    async def next_batch(self) -> list[FromRunner]:
        """Everything that has arrived (at least one message); raises on failure.

        Several ``Tokens`` that arrived together come back in one batch, so a reader that lags
        behind the runner catches up with one write instead of many.
        """
        while not self._items:
            if self.finished:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        out: list[FromRunner] = []
        items = self._items
        self._backlog = 0  # (every Tokens waiting is taken now: only a terminal message stops it)
        while items:
            item = items.popleft()
            if isinstance(item, BaseException):
                self.finished = True
                self._client.forget(self.id)
                if out:
                    items.appendleft(item)  # deliver what came before the error first
                    self.finished = False
                    return out
                raise item
            out.append(item)  # type: ignore[arg-type]
            if isinstance(item, _ENDS):  # (a one-shot reply ends it too)
                self.finished = True
                self._client.forget(self.id)
                break
        return out

    def close(self) -> None:
        """End the request now (synchronous): cancel it on the runner if it is still going."""
        if self.closed:
            return
        self.closed = True
        if not self.finished:
            self._client.cancel_nowait(self.id)


class RunnerClient:
    def __init__(self, frames: FrameReader[FromRunner], writer: FrameWriter) -> None:
        self.frames = frames
        self.writer = writer
        self.model = ""
        self.pid: int | None = None
        self._streams: dict[int, RequestStream] = {}
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._ids = itertools.count(1)
        self.backlog_limit = MAX_BACKLOG
        self._closed = asyncio.Event()
        self._writer_closed = False
        self.decoded = False  # the runner has finished a decode (produced tokens or vectors)

    def open(self, build: Callable[[int], Msg]) -> RequestStream:
        """Send the request ``build(id)`` and return its stream."""
        if self._closed.is_set():
            raise RunnerError("the model runner is no longer running", model=self.model)
        req_id = next(self._ids)
        try:
            self.writer.write(build(req_id))  # nothing can arrive for it before the next await
        except FrameError as exc:
            raise RequestTooLargeError(
                f"request too large for the model runner: {exc} (shorten the prompt or send"
                " fewer or smaller images)"
            ) from exc
        stream = RequestStream(self, req_id)
        self._streams[req_id] = stream
        return stream

    def forget(self, req_id: int) -> None:
        self._streams.pop(req_id, None)

    def cancel_nowait(self, req_id: int) -> None:
        if req_id in self._streams and not self._closed.is_set():
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.writer.write(Cancel(id=req_id))

    async def ping(self, timeout_s: float) -> None:
        req_id = next(self._ids)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[req_id] = fut
        try:
            self.writer.write(Ping(id=req_id))
            await asyncio.wait_for(fut, timeout_s)
        finally:
            self._pings.pop(req_id, None)

    async def run(self) -> None:
        """The reader task: route frames until the socket closes."""
        try:
            while True:
                msg = await self.frames.read()
                self._route(msg)
        except (ConnectionClosed, ConnectionError):
            pass
        except FrameError as exc:
            log.error("bad frame from runner pid=%s: %s", self.pid, exc)
        finally:
            self._closed.set()

    def _route(self, msg: FromRunner) -> None:
        if isinstance(msg, Pong):
            fut = self._pings.get(msg.id)
            if fut is not None and not fut.done():
                fut.set_result(None)
            return
        req_id = getattr(msg, "id", None)
        if req_id is None:
            if isinstance(msg, Failed):
                log.error("runner pid=%s reported: %s", self.pid, msg.message)
            return
        if not self.decoded and _shows_a_decode(msg):
            self.decoded = True
        stream = self._streams.get(req_id)
        if stream is None:
            return  # a late reply to a request that was already given up
        if isinstance(msg, Failed):
            stream._put(failed_to_error(msg, model=self.model, pid=self.pid))
        else:
            stream._put(msg)

    def fail_requests(self, exc: BaseException) -> int:
        """End every open request with ``exc`` and cancel it on the (living) runner; returns
        how many there were."""
        streams = list(self._streams.values())
        for stream in streams:
            self.cancel_nowait(stream.id)
            stream._put(exc)
        self._streams.clear()
        return len(streams)

    def fail_all(self, exc: BaseException) -> None:
        """The runner is gone: end every open request with ``exc``."""
        for stream in list(self._streams.values()):
            stream._put(exc)
        self._streams.clear()
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(exc)

    @property
    def closed(self) -> bool:
        """The socket has closed: the runner is gone or going."""
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def close(self) -> None:
        if not self._writer_closed:
            self._writer_closed = True
            self.writer.close()

    async def wait_writer_closed(self) -> None:
        await self.writer.wait_closed()
