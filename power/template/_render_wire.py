"""What the gateway and a chat-template render worker say to each other, and how.

One request at a time over the worker's stdin and stdout: a 4-byte big-endian length, then
that many bytes of msgpack. The gateway sends ``Render`` and reads one ``Rendered`` or
``Refused``; the worker answers every request it could read, unless it dies. ``retire`` asks
the gateway not to reuse the worker (it grew large; a fresh one is cheaper than its heap).

These messages never leave the machine and never reach a runner, so they live here rather than
in ``proto`` (the gateway<->runner boundary).
"""

from __future__ import annotations

import os
import select
import struct
import time
from typing import Any

import msgspec

__all__ = [
    "BIG_INT",
    "MAX_REQUEST",
    "Refused",
    "Render",
    "Rendered",
    "Reply",
    "WireClosed",
    "WireTimeout",
    "decode_ext",
    "read_frame",
    "write_frame",
]

MAX_REQUEST = 2**32 - 1  # the length prefix's range; the body limit bounds it long before
_HEADER = struct.Struct(">I")
_CHUNK = 1 << 20
BIG_INT = 1  # msgpack extension code: an int past msgpack's 64 bits, as its decimal digits


class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="op", tag=str.lower):
    pass


class Render(_Msg, frozen=True):
    """Render ``source`` as ``jinja.render_chat_template`` would, with these arguments."""

    source: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    add_generation_prompt: bool = True
    bos_token: str | None = None
    eos_token: str | None = None
    variables: dict[str, Any] = {}


class Rendered(_Msg, frozen=True):
    text: str
    retire: bool = False


class Refused(_Msg, frozen=True):
    """The template failed (``detail`` is what ``TemplateError`` would say); ``exhausted``: it
    ran out of the memory a rendering may take."""

    detail: str
    retire: bool = False
    exhausted: bool = False


Reply = Rendered | Refused


def decode_ext(code: int, data: memoryview) -> object:
    """The ``ext_hook`` that turns ``BIG_INT`` extensions back into ints."""
    if code == BIG_INT:
        return int(bytes(data))
    raise msgspec.DecodeError(f"unknown msgpack extension {code}")


class WireClosed(Exception):
    """The other side closed its end (``partial``: inside a frame)."""

    def __init__(self, *, partial: bool) -> None:
        super().__init__("closed inside a frame" if partial else "closed")
        self.partial = partial


class WireTimeout(Exception):
    """The deadline passed before the frame was through."""


def _wait(fd: int, deadline: float | None, *, write: bool) -> None:
    """Return once ``fd`` is ready; WireTimeout if the deadline passes first."""
    if deadline is None:
        return
    left = max(deadline - time.monotonic(), 0.0)
    ready = select.select([], [fd], [], left)[1] if write else select.select([fd], [], [], left)[0]
    if not ready:
        raise WireTimeout


def write_frame(fd: int, body: bytes, deadline: float | None) -> None:
    """Write a frame to ``fd`` (blocking); BrokenPipeError when the reader is gone."""
    header = _HEADER.pack(len(body))
    if len(body) < _CHUNK:
        _write_all(fd, memoryview(header + body), deadline)
    else:  # the header, then the body without copying it
        _write_all(fd, memoryview(header), deadline)
        _write_all(fd, memoryview(body), deadline)


def _write_all(fd: int, view: memoryview, deadline: float | None) -> None:
    while view:
        _wait(fd, deadline, write=True)
        view = view[os.write(fd, view[:_CHUNK]) :]


def read_frame(fd: int, limit: int, deadline: float | None) -> bytearray | None:
    """The next frame's body from ``fd``; None at a clean end between frames.

    A length over ``limit`` raises ValueError before the body is read."""
    header = _read_exactly(fd, _HEADER.size, deadline)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    if length > limit:
        raise ValueError(f"frame of {length} bytes is over the limit of {limit}")
    if (body := _read_exactly(fd, length, deadline)) is None:
        raise WireClosed(partial=True)
    return body


def _read_exactly(fd: int, n: int, deadline: float | None) -> bytearray | None:
    """n bytes; None when the stream ends before the first, WireClosed after it."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        _wait(fd, deadline, write=False)
        count = os.readv(fd, [view[got : got + _CHUNK]])
        if not count:
            if got:
                raise WireClosed(partial=True)
            return None
        got += count
    return buf
