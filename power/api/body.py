"""Request bodies: one size limit, and one bounded path from bytes to JSON for every handler.

``BodyLimitMiddleware`` caps what a JSON request may send at ``max_body_size`` bytes. A body
whose ``Content-Length`` is over the limit is refused before a byte of it is read, and a chunked
one as soon as it passes the limit: the handler meets ``RequestTooLargeError`` (413) when it
reads, and answers it in its own API's error shape; what the client still sends is dropped as it
arrives, never kept. Blob uploads (``/api/blobs/``) stream to disk and have no limit. A body,
blobs' too, that pauses for ``body_timeout_s`` before its end is a ``RequestTimeoutError``
(408) in the same way, and a client that goes away mid-body a ``ClientClosedError``.

``decode_body`` and ``json_object`` are how handlers read JSON: an empty body, malformed JSON, a
value of the wrong type and nesting deeper than ``MAX_DEPTH`` are 400s, and a large body is
decoded in a worker thread. A lone UTF-16 surrogate escape (``"\\ud83d"``: half an emoji, as a
JavaScript client that cut a string may send) becomes U+FFFD, as Go's decoder (Ollama's) makes it.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, TypeVar

import msgspec
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from power.errors import (
    ClientClosedError,
    InvalidRequestError,
    RequestTimeoutError,
    RequestTooLargeError,
)

__all__ = ["MAX_DEPTH", "BodyLimitMiddleware", "decode_body", "decode_json", "json_object"]

T = TypeVar("T")

UNLIMITED_PREFIXES = ("/api/blobs/",)
MAX_DEPTH = 100  # arrays and objects inside each other; Python's own limit is about 1000
OFF_LOOP_BYTES = 1 << 20  # bodies from this size are decoded in a worker thread


def _too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"request body too large: the limit is {limit} bytes (A3S_POWER_MAX_BODY_SIZE)"
    )


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` (0: no limit) without buffering them, and
    bodies that pause for ``idle_s`` before their end.

    What the application leaves unread of a body is read and dropped from the moment it sends
    the end of its answer: Hypercorn queues a few chunks of the body for the application and,
    with that queue full, would wait forever to tell it the request is over.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, idle_s: float = 75.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle_s = idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = 0 if scope["path"].startswith(UNLIMITED_PREFIXES) else self.max_bytes
        declared = Headers(scope=scope).get("content-length", "")
        refused = limit > 0 and declared.isdigit() and int(declared) > limit
        seen = 0
        ended = False  # the last chunk of the body, or the disconnect, has been received
        dropping: asyncio.Task[None] | None = None

        def note(message: Message) -> None:
            nonlocal ended
            more = message["type"] == "http.request" and message.get("more_body", False)
            ended = ended or not more

        async def guarded() -> Message:
            nonlocal seen
            if refused:
                raise _too_large(limit)
            if ended:  # (the disconnect a streaming answer waits for: no deadline)
                return await receive()
            try:
                async with asyncio.timeout(self.idle_s):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeoutError(
                    f"the request body stopped arriving: nothing for {self.idle_s:g} s "
                    "(body_timeout_s)"
                ) from None
            note(message)
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if 0 < limit < seen:
                    raise _too_large(limit)
            return message

        async def drop_the_rest() -> None:
            while not ended:
                note(await receive())

        async def sending(message: Message) -> None:
            nonlocal dropping
            if message["type"] == "http.response.start" and not ended:
                # the server closes a connection whose request it has not read to the end
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            last = message["type"] == "http.response.body" and not message.get("more_body")
            if last and not ended and dropping is None:
                dropping = asyncio.ensure_future(drop_the_rest())  # owned: finish() awaits it
            await send(message)

        async def finish() -> None:
            if dropping is None:
                await drop_the_rest()  # no answer went out through here: nobody else reads now
            elif ended:
                dropping.cancel()  # another reader took the last message
            else:
                await dropping

        try:
            try:
                await self.app(scope, guarded, sending)
            except Exception:
                await finish()
                raise
            await finish()
        finally:
            if dropping is not None and not dropping.done():
                dropping.cancel()


def _nesting_exceeds(value: object, limit: int) -> bool:
    """Whether arrays/objects (and Structs) nest more than ``limit`` deep; iterative."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        elif isinstance(item, msgspec.Struct):
            children = [getattr(item, name) for name in item.__struct_fields__]
        else:
            continue
        if depth > limit:
            return True
        stack.extend(
            (child, depth + 1)
            for child in children
            if isinstance(child, dict | list | tuple | msgspec.Struct)
        )
    return False


# an escaped backslash (skipped whole), a surrogate pair (kept), or a lone surrogate
_ESCAPES = re.compile(
    rb"(\\\\)|(\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
)
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogates_replaced(body: bytes) -> bytes:
    return _ESCAPES.sub(lambda m: m.group(0) if m.lastindex else rb"\ufffd", body)


def decode_json(body: bytes, kind: type[T]) -> T:
    """``body`` decoded as ``kind``; every way it can be wrong is an ``InvalidRequestError``."""
    try:
        value = msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(str(exc)) from exc
    except msgspec.DecodeError as exc:
        if _SURROGATE.search(body):
            fixed = _lone_surrogates_replaced(body)
            if fixed != body:
                return decode_json(fixed, kind)
        raise InvalidRequestError(f"invalid JSON: {exc}") from exc
    except RecursionError:
        too_deep = True  # deeper than the interpreter can decode
    else:
        # a body with few brackets cannot nest deeply: the walk is skipped
        too_deep = body.count(b"[") + body.count(b"{") > MAX_DEPTH and _nesting_exceeds(
            value, MAX_DEPTH
        )
    if too_deep:
        raise InvalidRequestError(f"request body nests more than {MAX_DEPTH} levels deep")
    return value


async def decode_body(request: Request, kind: type[T]) -> T:
    """The request's JSON body as ``kind``: 400 when missing or invalid, 413 when too large."""
    try:
        body = await request.body()
    except ClientDisconnect:
        raise ClientClosedError("client closed the connection while sending the body") from None
    if not body.strip():
        raise InvalidRequestError("missing request body")
    if len(body) >= OFF_LOOP_BYTES:
        return await asyncio.to_thread(decode_json, body, kind)
    return decode_json(body, kind)


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object: empty -> "missing request body", malformed -> 400."""
    data: object = await decode_body(request, Any)  # type: ignore[arg-type]
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    return data
