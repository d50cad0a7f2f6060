"""Length-prefixed msgpack frames over a byte stream.

A frame is a 4-byte big-endian length followed by that many bytes of msgpack. A length over
``MAX_FRAME`` is rejected before the body is read, and a stream that ends inside a frame raises
``ConnectionClosed`` just as a clean end between frames does (with ``mid_frame`` set). So does a
reset: a process killed with frames it never read still queued (a runner SIGKILLed before it
read its ``Load``) resets the socket rather than ending it, and that is the same event.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Generic, TypeVar

import msgspec

from proto.messages import FromRunner, ToRunner

__all__ = [
    "MAX_FRAME",
    "ConnectionClosed",
    "FrameError",
    "FrameReader",
    "FrameWriter",
    "gateway_decoder",
    "runner_decoder",
]

MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")

T = TypeVar("T")


class FrameError(Exception):
    """A frame that cannot be accepted: oversized, or not a valid message."""


class ConnectionClosed(Exception):
    """The peer closed the stream (``mid_frame`` is True if it died inside a frame)."""

    def __init__(self, *, mid_frame: bool) -> None:
        super().__init__("connection closed mid-frame" if mid_frame else "connection closed")
        self.mid_frame = mid_frame


def runner_decoder() -> msgspec.msgpack.Decoder[ToRunner]:
    """The decoder a runner uses for what it receives."""
    return msgspec.msgpack.Decoder(ToRunner)  # type: ignore[arg-type]


def gateway_decoder() -> msgspec.msgpack.Decoder[FromRunner]:
    """The decoder the gateway uses for what it receives."""
    return msgspec.msgpack.Decoder(FromRunner)  # type: ignore[arg-type]


class FrameReader(Generic[T]):
    """Reads typed messages from an asyncio stream."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        decoder: msgspec.msgpack.Decoder[T],
        *,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self._reader = reader
        self._decoder = decoder
        self._max_frame = max_frame

    async def read(self) -> T:
        try:
            header = await self._reader.readexactly(4)
        except asyncio.IncompleteReadError as exc:
            raise ConnectionClosed(mid_frame=bool(exc.partial)) from None
        except ConnectionResetError:
            raise ConnectionClosed(mid_frame=False) from None
        (length,) = _HEADER.unpack(header)
        if length > self._max_frame:
            raise FrameError(f"frame of {length} bytes exceeds the {self._max_frame} byte limit")
        try:
            body = await self._reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            raise ConnectionClosed(mid_frame=True) from None
        try:
            return self._decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise FrameError(f"undecodable frame: {exc}") from exc


class FrameWriter:
    """Encodes messages into frames; one reusable buffer, no per-frame allocation of a prefix."""

    def __init__(self, writer: asyncio.StreamWriter, *, max_frame: int = MAX_FRAME) -> None:
        self._writer = writer
        self._encoder = msgspec.msgpack.Encoder()
        self._buf = bytearray()
        self._max_frame = max_frame

    def encode(self, msg: object) -> bytes:
        """One frame as bytes (header included)."""
        buf = self._buf
        buf.clear()
        buf.extend(b"\0\0\0\0")
        self._encoder.encode_into(msg, buf, 4)
        length = len(buf) - 4
        if length > self._max_frame:
            raise FrameError(f"frame of {length} bytes exceeds the {self._max_frame} byte limit")
        _HEADER.pack_into(buf, 0, length)
        return bytes(buf)

    def write(self, msg: object) -> None:
        """Queue one frame on the transport (no await: safe from synchronous cleanup paths)."""
        self._writer.write(self.encode(msg))

    def write_many(self, msgs: list[object]) -> None:
        self._writer.write(b"".join(self.encode(m) for m in msgs))

    async def drain(self) -> None:
        await self._writer.drain()

    def close(self) -> None:
        self._writer.close()

    async def wait_closed(self) -> None:
        try:
            await self._writer.wait_closed()
        except (ConnectionError, BrokenPipeError):
            pass
