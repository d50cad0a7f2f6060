"""Response helpers every API surface shares: JSON bodies, Ollama's timestamps and debug info."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TypeVar

import msgspec
from msgspec import UnsetType
from starlette.responses import Response

from power.api.schemas import DebugInfo

__all__ = ["created_at", "debug_info", "joined", "json_response"]

T = TypeVar("T")

_second: int = -1
_second_text: str = ""


def created_at() -> str:
    """RFC 3339 with nanoseconds, UTC (the seconds part is formatted once per second)."""
    global _second, _second_text
    ns = time.time_ns()
    sec, frac = divmod(ns, 1_000_000_000)
    if sec != _second:
        _second = sec
        _second_text = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second_text}.{frac:09d}Z"


def joined(parts: Iterable[list[T] | UnsetType]) -> list[T]:
    """The lists that are set, concatenated (tool calls or logprobs of every chunk)."""
    out: list[T] = []
    for part in parts:
        if part is not msgspec.UNSET:
            out.extend(part)
    return out


_encoder = msgspec.json.Encoder()


def json_response(obj: object, status: int = 200) -> Response:
    return Response(
        _encoder.encode(obj), status_code=status, media_type="application/json; charset=utf-8"
    )


def debug_info(prompt: str, images: tuple[bytes, ...]) -> DebugInfo:
    """``_debug_render_only``'s answer: the prompt the model would have been given."""
    return DebugInfo(rendered_template=prompt, image_count=len(images) or msgspec.UNSET)
