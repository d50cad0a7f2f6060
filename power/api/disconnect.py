"""Cancel a request's handler as soon as its client disconnects.

An ASGI server tells the application about a disconnect only through ``receive()``, which a
handler that is waiting for a model (queued, loading) never calls. For the inference routes this
middleware reads ``receive()`` on the handler's behalf and cancels it when the client goes: a
queued request leaves the queue, and a generating one cancels its work on the runner. An error
from ``receive()`` (a body over the size limit) reaches the handler when it reads.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from power.aio import Interrupted, until
from power.errors import PowerError

__all__ = ["CancelOnDisconnect"]

_PREFIXES = ("/api/generate", "/api/chat", "/api/embed", "/v1/")


class CancelOnDisconnect:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_PREFIXES):
            await self.app(scope, receive, send)
            return
        inbox: asyncio.Queue[Message | PowerError] = asyncio.Queue()
        gone = asyncio.Event()

        async def pump() -> None:
            while True:
                try:
                    message = await receive()
                except PowerError as exc:  # a body over the limit: nothing more will be read
                    inbox.put_nowait(exc)
                    return
                inbox.put_nowait(message)
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        async def next_message() -> Message:
            item = await inbox.get()
            if isinstance(item, PowerError):
                raise item  # the handler meets it as it reads the body
            return item

        reader = asyncio.ensure_future(pump())  # owned here: cancelled and awaited below
        try:
            with contextlib.suppress(Interrupted):  # the client went: the handler was cancelled
                await until(self.app(scope, next_message, send), gone)
        finally:
            reader.cancel()
            await asyncio.wait({reader})
