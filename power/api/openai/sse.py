"""What every OpenAI-compatible route shares: errors in OpenAI's shape, SSE framing, ids, bodies,
and the sampling fields that map onto native ``options``.

Errors raised as ``PowerError`` anywhere in a ``/v1`` handler are rendered as
``{"error": {"message", "type", "param", "code"}}`` with the error's own status, and errors after
the stream has started become one ``data: {"error": …}`` event, after which the stream ends
without ``[DONE]`` (the official SDK raises ``APIError`` on it).

Two extensions that Ollama lacks: a body may carry native ``options`` (``num_ctx`` and the rest)
and ``keep_alive``; the ``X-Keep-Alive`` header sets keep_alive too.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from power.api.body import decode_body as decode
from power.errors import InvalidRequestError, ModelNotFoundError, PowerError, reported

__all__ = [
    "ParamError",
    "decode",
    "error_responses",
    "keep_alive",
    "new_id",
    "openai_error_body",
    "openai_errors",
    "sampling_options",
    "sse",
    "sse_error",
    "stop_list",
]


T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]

_encoder = msgspec.json.Encoder()
DONE = b"data: [DONE]\n\n"
KEEP_ALIVE_HEADER = "x-keep-alive"


class ParamError(InvalidRequestError):
    """A 400 that names the offending request field, as OpenAI's ``error.param`` does."""

    def __init__(self, message: str, *, param: str, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def _error_type(status: int) -> str:
    if status in (400, 405, 408, 413):
        return "invalid_request_error"
    if status == 401:
        return "invalid_request_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status in (429, 503):
        return "server_busy_error"
    return "api_error"


def openai_error_body(exc: PowerError) -> dict[str, Any]:
    param = getattr(exc, "param", None)
    code = getattr(exc, "code", None)
    if code is None and isinstance(exc, ModelNotFoundError):
        code = "model_not_found"
    return {
        "error": {"message": str(exc), "type": _error_type(exc.status), "param": param,
                  "code": code}
    }  # fmt: skip


def error_responses(body: Callable[[PowerError], object]) -> Callable[[Handler], Handler]:
    """A decorator that renders every failure of a handler as ``body(error)``, with the error's
    status and headers."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as raised:
                exc = reported(raised, method=request.method, path=request.url.path)
                return Response(
                    _encoder.encode(body(exc)),
                    status_code=exc.status,
                    headers=exc.headers,
                    media_type="application/json",
                )

        return wrapped

    return decorate


openai_errors = error_responses(openai_error_body)


def sse(obj: object, event: str | None = None) -> bytes:
    data = b"data: " + _encoder.encode(obj) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + data if event else data


def sse_error(exc: PowerError) -> bytes:
    return sse(openai_error_body(exc))


def new_id(prefix: str, nbytes: int = 12) -> str:
    """A unique id such as ``chatcmpl-1f0c…`` (Ollama's ``chatcmpl-<0..998>`` collides)."""
    return prefix + secrets.token_hex(nbytes)


def keep_alive(request: Request, body_value: Any) -> Any:
    """The body's ``keep_alive`` extension, else the ``X-Keep-Alive`` header, else None."""
    if body_value is not None:
        return body_value
    header = request.headers.get(KEEP_ALIVE_HEADER)
    if header is None:
        return None
    try:
        return float(header)  # a bare number is seconds, as in a JSON body
    except ValueError:
        return header


def stop_list(value: Any, param: str = "stop") -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    raise ParamError(f"'{param}' must be a string or an array of strings", param=param)


def sampling_options(
    extra: dict[str, Any] | None,
    *,
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None = None,
    seed: int | None = None,
    stop: list[str] | None = None,
    frequency_penalty: float | None = None,
    presence_penalty: float | None = None,
    top_k: int | None = None,
) -> dict[str, Any]:
    """Native options: the body's ``options`` extension, overridden by the standard fields.

    ``temperature`` and ``top_p`` default to 1.0 when absent, as OpenAI's API and Ollama's
    compatibility layer do (the Modelfile default does not apply) unless ``options`` sets them.
    """
    opts = dict(extra or {})
    opts["temperature"] = opts.get("temperature", 1.0) if temperature is None else temperature
    opts["top_p"] = opts.get("top_p", 1.0) if top_p is None else top_p
    if max_tokens is not None:
        if max_tokens < 0:
            raise ParamError("max_tokens must not be negative", param="max_tokens")
        opts["num_predict"] = max_tokens
    for key, value in (
        ("seed", seed),
        ("stop", stop),
        ("frequency_penalty", frequency_penalty),
        ("presence_penalty", presence_penalty),
        ("top_k", top_k),
    ):
        if value is not None:
            opts[key] = value
    return opts
