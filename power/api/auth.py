"""API keys (Ollama has none): who may call the API at all, and who may change the store.

With ``api_keys`` set, every request but ``/``, ``/health`` and ``/api/version`` (what load
balancers and version probes call) carries a key, as the OpenAI SDK sends it
(``Authorization: Bearer KEY``) or the Anthropic SDK (``x-api-key: KEY``). A missing or wrong
key is 401, a read-only key (``KEY:ro``) on a route that writes the store is 403, each in the
error shape of the API the path belongs to. Keys are compared in constant time, against every
configured key so the time does not tell which one came close, and never logged.
"""

from __future__ import annotations

import hmac

import msgspec
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from power.api.anthropic.convert import anthropic_error_body
from power.api.openai.sse import openai_error_body
from power.errors import ForbiddenError, PowerError, UnauthorizedError
from power.settings import ApiKey

__all__ = ["EXEMPT_PATHS", "AuthMiddleware"]

EXEMPT_PATHS = frozenset({"/", "/health", "/api/version"})

# (method, path prefix) of every route that writes the store or a registry
_WRITES = (
    ("POST", "/api/create"),
    ("POST", "/api/copy"),
    ("DELETE", "/api/delete"),
    ("POST", "/api/pull"),
    ("POST", "/api/push"),
    ("POST", "/api/blobs/"),
    ("PUT", "/api/blobs/"),
    ("DELETE", "/api/blobs/"),
)


def _presented(headers: Headers) -> bytes | None:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip().encode("latin-1", "replace")
    key = headers.get("x-api-key", "").strip()
    return key.encode("latin-1", "replace") if key else None


def _match(keys: tuple[ApiKey, ...], presented: bytes) -> ApiKey | None:
    found = None
    for key in keys:  # all of them, whichever matches
        if hmac.compare_digest(key.secret, presented):
            found = key
    return found


def _writes(method: str, path: str) -> bool:
    return any(method == m and path.startswith(prefix) for m, prefix in _WRITES)


def _body(path: str, exc: PowerError) -> object:
    if path.startswith("/v1/messages"):
        return anthropic_error_body(exc)
    if path.startswith("/v1/"):
        body = openai_error_body(exc)
        if exc.status == 401:
            body["error"].update(type="invalid_request_error", code="invalid_api_key")
        return body
    return {"error": str(exc)}


class AuthMiddleware:
    def __init__(self, app: ASGIApp, *, keys: tuple[ApiKey, ...]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.keys or scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":  # CORS preflights carry no credentials
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        presented = _presented(Headers(scope=scope))
        key = _match(self.keys, presented) if presented is not None else None
        if key is None:
            why = "missing API key" if presented is None else "invalid API key"
            await _refuse(send, path, UnauthorizedError(
                f"{why}: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
            ))  # fmt: skip
            return
        if key.read_only and _writes(method, path):
            await _refuse(send, path, ForbiddenError(
                f"this API key is read-only: {method} {path} changes models"
            ))  # fmt: skip
            return
        await self.app(scope, receive, send)


async def _refuse(send: Send, path: str, exc: PowerError) -> None:
    body = msgspec.json.encode(_body(path, exc))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
