"""proto: message round-trips and framing over an in-memory stream."""

from __future__ import annotations

import asyncio
import socket
import struct

import msgspec
import pytest

import proto
from proto import (
    ConnectionClosed,
    Done,
    ErrorCode,
    Failed,
    FrameError,
    FrameReader,
    FrameWriter,
    Generate,
    Hello,
    Sampling,
    Stats,
    TokenLogprob,
    Tokens,
    TopLogprob,
    gateway_decoder,
    runner_decoder,
)

pytestmark = pytest.mark.anyio


class _Sink:
    """A StreamWriter stand-in that collects bytes (the FrameWriter only calls write/drain)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data


def _reader(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def _encode(*msgs: object) -> bytes:
    sink = _Sink()
    writer = FrameWriter(sink)  # type: ignore[arg-type]
    for msg in msgs:
        writer.write(msg)
    return bytes(sink.data)


def test_every_message_round_trips_through_its_decoder() -> None:
    lp = TokenLogprob(token="Hi", logprob=-0.5, utf8=b"Hi", top=(TopLogprob("Hi", -0.5, b"Hi"),))
    to_gateway = [
        Hello(protocol=proto.PROTOCOL_VERSION, pid=42),
        Tokens(id=3, text="héllo", ids=(1, 2), logprobs=(lp,), first=True),
        Done(id=3, reason="length", stats=Stats(prompt_tokens=5, eval_tokens=2)),
        Failed(id=None, code=ErrorCode.LOAD, message="no such file"),
    ]
    dec = gateway_decoder()
    enc = msgspec.msgpack.Encoder()
    for msg in to_gateway:
        assert dec.decode(enc.encode(msg)) == msg
    to_runner = Generate(id=9, prompt="x", sampling=Sampling(temperature=0.0), stop=("\n",))
    assert runner_decoder().decode(enc.encode(to_runner)) == to_runner


async def test_reader_yields_frames_in_order_then_reports_a_clean_close() -> None:
    msgs = [Tokens(id=1, text="a", ids=(5,)), Done(id=1, reason="stop", stats=Stats())]
    frames = FrameReader(_reader(_encode(*msgs)), gateway_decoder())
    assert await frames.read() == msgs[0]
    assert await frames.read() == msgs[1]
    with pytest.raises(ConnectionClosed) as info:
        await frames.read()
    assert info.value.mid_frame is False


@pytest.mark.parametrize("cut", [2, 4, 7])
async def test_eof_inside_a_frame_is_a_mid_frame_close(cut: int) -> None:
    data = _encode(Tokens(id=1, text="abcdef", ids=(1, 2, 3)))
    frames = FrameReader(_reader(data[:cut]), gateway_decoder())
    with pytest.raises(ConnectionClosed) as info:
        await frames.read()
    assert info.value.mid_frame is True


async def test_a_peer_gone_with_frames_it_never_read_is_a_close_not_a_reset() -> None:
    """A runner SIGKILLed before reading its ``Load`` resets the Unix socket (ECONNRESET):
    the gateway must see the same ``ConnectionClosed`` as for a clean end, which its load path
    turns into "the runner died" (and retries once) instead of an unexpected error."""
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    try:
        writer.write(b"\0" * 64)  # queued at the peer, never read
        await writer.drain()
        peer.close()
        frames = FrameReader(reader, gateway_decoder())
        with pytest.raises(ConnectionClosed) as info:
            await frames.read()
        assert info.value.mid_frame is False
    finally:
        writer.close()


async def test_an_oversized_length_is_rejected_before_reading_the_body() -> None:
    header = struct.pack(">I", 1024)
    # Only the header is there and the stream stays open: reading the body would hang.
    frames = FrameReader(_reader(header, eof=False), gateway_decoder(), max_frame=100)
    with pytest.raises(FrameError, match="exceeds"):
        await asyncio.wait_for(frames.read(), 1.0)


async def test_garbage_and_unknown_tags_are_frame_errors() -> None:
    bad_tag = msgspec.msgpack.encode({"op": "nonsense", "id": 1})
    data = struct.pack(">I", len(bad_tag)) + bad_tag
    with pytest.raises(FrameError):
        await FrameReader(_reader(data), gateway_decoder()).read()
    junk = b"\xc1\xc1"
    with pytest.raises(FrameError):
        await FrameReader(_reader(struct.pack(">I", 2) + junk), gateway_decoder()).read()


def test_writer_refuses_to_build_an_oversized_frame() -> None:
    writer = FrameWriter(_Sink(), max_frame=16)  # type: ignore[arg-type]
    with pytest.raises(FrameError):
        writer.encode(Tokens(id=1, text="x" * 100, ids=()))


def test_the_length_prefix_is_big_endian_and_counts_the_body() -> None:
    frame = _encode(Hello(protocol=1, pid=7))
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert gateway_decoder().decode(frame[4:]) == Hello(protocol=1, pid=7)
