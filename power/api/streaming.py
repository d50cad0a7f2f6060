"""Streaming responses that are primed, closed promptly, and end errors in-band.

A handler awaits the first chunk before it builds the response, so a missing model or a failed
load is still a real 404/500. After that, an error becomes one final in-band line (Ollama's
``{"error": …}``; SSE flavours bring their own). The body iterator is closed as soon as the
request ends — finished, failed or client gone — which cancels the work on the runner and
releases its lease at once instead of whenever the garbage collector gets to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from power.aio import Interrupted, until
from power.errors import PowerError

__all__ = ["NDJSONResponse", "StreamResponse", "ndjson_error_line", "ndjson_lines", "prime"]

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


def ndjson_error_line(exc: PowerError) -> bytes:
    return _encoder.encode({"error": str(exc)}) + b"\n"


async def ndjson_lines(chunks: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """Encode each chunk as one JSON line; closes ``chunks`` when the stream ends."""
    try:
        async for chunk in chunks:
            yield _encoder.encode(chunk) + b"\n"
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def prime(chunks: AsyncIterator[bytes]) -> tuple[bytes, AsyncIterator[bytes]]:
    """Await the first chunk (errors propagate to the handler) and return it with the rest."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""
    except BaseException:
        with contextlib.suppress(Exception):
            await chunks.aclose()  # type: ignore[attr-defined]
        raise
    return first, chunks


class StreamResponse(Response):
    def __init__(
        self,
        first: bytes,
        rest: AsyncIterator[bytes],
        *,
        media_type: str,
        error_line: Callable[[PowerError], bytes],
        trailer: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(content=None, status_code=200, headers=headers, media_type=media_type)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._first = first
        self._rest = rest
        self._error_line = error_line
        self._trailer = trailer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(_wait_disconnect(receive, gone))  # awaited below
        try:
            await until(self._send_body(send), gone)
        except (Interrupted, OSError):  # the client went (a write to it may fail first)
            log.debug("client disconnected mid-stream")
        finally:
            watcher.cancel()
            await asyncio.wait({watcher})

    async def _send_body(self, send: Send) -> None:
        rest = self._rest
        try:
            if self._first:
                await send({"type": "http.response.body", "body": self._first, "more_body": True})
            try:
                async for chunk in rest:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except PowerError as exc:
                log.info("stream ended with an error: %s", exc)
                await send(
                    {"type": "http.response.body", "body": self._error_line(exc), "more_body": True}
                )
            except Exception:
                log.exception("stream failed")
                err = PowerError("internal error while streaming the response")
                await send(
                    {"type": "http.response.body", "body": self._error_line(err), "more_body": True}
                )
            else:
                if self._trailer:
                    await send(
                        {"type": "http.response.body", "body": self._trailer, "more_body": True}
                    )
        finally:
            await rest.aclose()  # type: ignore[attr-defined]
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class NDJSONResponse(StreamResponse):
    def __init__(self, first: bytes, rest: AsyncIterator[bytes]) -> None:
        super().__init__(
            first, rest, media_type="application/x-ndjson", error_line=ndjson_error_line
        )


async def _wait_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return
