"""CORS and Host checks, as Ollama does them.

Origins: the allowed list (``OLLAMA_ORIGINS`` plus Ollama's defaults, ``*`` wildcards allowed);
a request whose ``Origin`` is not allowed gets 403 with an empty body, a preflight from an
allowed one 204. Host: only while listening on loopback, a request whose ``Host`` is not a local
name or address gets 403 (DNS-rebinding guard).
"""

from __future__ import annotations

import ipaddress
import platform
import re
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["GuardMiddleware"]

_ALLOW_HEADERS = (
    "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, "
    "x-stainless-arch, x-stainless-async, x-stainless-custom-poll-interval, "
    "x-stainless-helper-method, x-stainless-lang, x-stainless-os, x-stainless-package-version, "
    "x-stainless-poll-helper, x-stainless-retry-count, x-stainless-runtime, "
    "x-stainless-runtime-version, x-stainless-timeout, anthropic-version, x-api-key"
)
_ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"


def _pattern(origins: Sequence[str]) -> re.Pattern[str]:
    parts = ["^" + re.escape(o).replace(r"\*", ".*") + "$" for o in origins]
    return re.compile("|".join(parts) if parts else "$^")


def _host_allowed(host: str) -> bool:
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    name = name.lower()
    if name in ("", "localhost") or name == platform.node().lower():
        return True
    if name.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return False
    return addr.is_loopback or addr.is_private or addr.is_unspecified or addr.is_link_local


class GuardMiddleware:
    def __init__(self, app: ASGIApp, *, origins: Sequence[str], check_host: bool) -> None:
        self.app = app
        self._origins = _pattern(origins)
        self._check_host = check_host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self._check_host and not _host_allowed(headers.get("host", "")):
            await _empty(send, 403)
            return
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if not self._origins.match(origin):
            await _empty(send, 403)
            return
        cors = [
            (b"access-control-allow-origin", origin.encode()),
            (b"vary", b"Origin"),
        ]
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            cors += [
                (b"access-control-allow-methods", _ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", _ALLOW_HEADERS.encode()),
                (b"access-control-max-age", b"43200"),
            ]
            await _empty(send, 204, cors)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *cors]
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _empty(send: Send, status: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": b""})
