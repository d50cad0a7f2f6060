"""What each HTTP request did, for whoever watches: the access log, metrics and usage records.

``ObserveMiddleware`` (outermost) starts a ``RequestInfo`` per request and puts it in a context
variable; the generation pipeline fills in the model, the tokens and the time to the first
token as they happen; when the response has been sent (a stream to its last byte) every
``Observer`` gets the finished record. Observers are called on the event loop and must be
quick: one that writes to disk hands the record to a thread.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ObserveMiddleware", "Observer", "RequestInfo", "current"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RequestInfo:
    """One request, filled in as it runs."""

    method: str
    path: str
    client: str
    started: float  # perf_counter at arrival
    wall: float  # time.time() at arrival
    route: str = ""  # the route template (``/api/blobs/{digest}``), "" when none matched
    status: int = 0
    duration_s: float = 0.0
    # set by the pipeline for a request that ran a model
    kind: str = ""  # "generate", "chat" or "embed" (the native handler under any API)
    model: str = ""
    prompt_tokens: int = 0  # the whole prompt, cached part included
    cached_tokens: int = 0
    output_tokens: int = 0
    ttft_s: float | None = None
    load_s: float = 0.0
    error: str = ""  # why it failed, also after its first byte (a stream cut by an error)

    @property
    def inference(self) -> bool:
        return bool(self.model)

    @property
    def failed(self) -> bool:
        return bool(self.error) or self.status >= 400


class Observer(Protocol):
    def request_done(self, info: RequestInfo) -> None:
        """Called once per request after its response ended; must not block."""
        ...


_current: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar(
    "power_request", default=None
)


def current() -> RequestInfo | None:
    """The request being served in this context (None outside a request, as in tests)."""
    return _current.get()


class ObserveMiddleware:
    """Starts each request's ``RequestInfo`` and hands the finished one to ``observers``.

    ``route_of`` maps the request's scope to its route template (``/api/blobs/{digest}``, ""
    when none matches), so labels stay bounded.
    """

    def __init__(
        self,
        app: ASGIApp,
        observers: Sequence[Observer],
        route_of: Callable[[Scope], str],
    ) -> None:
        self.app = app
        self.observers = observers
        self.route_of = route_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        info = RequestInfo(
            method=scope["method"],
            path=scope["path"],
            client=f"{client[0]}:{client[1]}" if client else "",
            started=time.perf_counter(),
            wall=time.time(),
        )
        token = _current.set(info)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                info.status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except BaseException as exc:
            info.status = info.status or 500
            info.error = info.error or type(exc).__name__
            raise
        finally:
            _current.reset(token)
            info.duration_s = time.perf_counter() - info.started
            info.route = self.route_of(scope)
            for observer in self.observers:
                try:
                    observer.request_done(info)
                except Exception:  # an observer's bug must not fail the request
                    log.exception("observer %r failed", observer)
