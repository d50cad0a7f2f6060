"""runner.output: UTF-8 across tokens, stop strings held back and trimmed."""

from __future__ import annotations

import pytest

from runner.output import TextAssembler
from tests.support.wait import wait_for


def _run(pieces: list[bytes], stop: list[str]) -> tuple[str, str]:
    """The text released and the stop string that ended it ("" when none did)."""
    asm = TextAssembler(stop)
    out = []
    for piece in pieces:
        out.append(asm.feed(piece))
        if asm.stopped:
            break
    out.append(asm.flush())
    assert asm.stopped == bool(asm.matched)
    return "".join(out), asm.matched


def test_multibyte_characters_split_across_tokens_come_out_whole() -> None:
    snow = "☃".encode()
    asm = TextAssembler([])
    assert asm.feed(snow[:1]) == ""
    assert asm.feed(snow[1:]) == "☃"


@pytest.mark.parametrize("stop", [[], ["</s>"]])
def test_a_generation_cut_inside_a_character_drops_its_bytes(stop: list[str]) -> None:
    snow = "☃".encode()
    asm = TextAssembler(stop)
    streamed = [asm.feed(b"ok "), asm.feed(snow), asm.feed(snow[:2])]
    assert "".join(streamed) + asm.flush() == "ok ☃"  # not "ok ☃\ufffd"


def test_invalid_bytes_inside_the_text_are_still_replaced() -> None:
    asm = TextAssembler([])
    assert asm.feed(b"a\xffb") + asm.flush() == "a\ufffdb"


@pytest.mark.parametrize(
    ("pieces", "stop", "expected", "matched"),
    [
        ([b"Hello", b" wor", b"ld"], [], "Hello world", ""),
        ([b"Hello", b"\n", b"User:"], ["\nUser:"], "Hello", "\nUser:"),
        ([b"ab", b"<|im", b"_end|>", b"tail"], ["<|im_end|>"], "ab", "<|im_end|>"),
        ([b"a<|im", b" no"], ["<|im_end|>"], "a<|im no", ""),  # a false start is released
        ([b"x END y"], ["END"], "x ", "END"),
        ([b"one", b"two"], ["STOP", "two"], "one", "two"),
        ([b"a BEND"], ["END", "BEND"], "a ", "BEND"),  # the one that starts first
        ([b"a END"], ["END", "EN"], "a ", "END"),  # of two at one place, the first listed
    ],
)
def test_stop_strings(pieces: list[bytes], stop: list[str], expected: str, matched: str) -> None:
    assert _run(pieces, stop) == (expected, matched)


def test_text_that_might_start_a_stop_is_held_until_resolved() -> None:
    asm = TextAssembler(["</s>"])
    assert asm.feed(b"hi </") == "hi "
    assert asm.feed(b"b>") == "</b>"


class _Frames:
    """A FrameWriter stand-in recording each write call's messages."""

    def __init__(self) -> None:
        self.writes: list[list[object]] = []

    def write(self, msg: object) -> None:
        self.writes.append([msg])

    def write_many(self, msgs: list[object]) -> None:
        self.writes.append(msgs)


def test_fast_tokens_travel_together_but_first_tokens_and_done_do_not_wait() -> None:
    import asyncio
    import threading

    from proto import Done, Stats, Tokens
    from runner.outbox import Outbox

    async def scenario() -> list[list[object]]:
        frames = _Frames()
        box = Outbox(frames, asyncio.get_running_loop())  # type: ignore[arg-type]

        def produce() -> None:  # the inference thread
            box.push_threadsafe(Tokens(id=1, text="a", ids=(1,), first=True))
            for i in range(2, 6):
                box.push_threadsafe(Tokens(id=1, text="b", ids=(i,)))
            box.push_threadsafe(Done(id=1, reason="stop", stats=Stats()))

        thread = threading.Thread(target=produce)
        thread.start()
        thread.join()
        await wait_for(lambda: any(isinstance(m, Done) for w in frames.writes for m in w))
        return frames.writes

    writes = asyncio.run(scenario())
    flat = [m for w in writes for m in w]
    texts = "".join(m.text for m in flat if isinstance(m, Tokens))
    assert texts == "abbbb"
    assert isinstance(flat[-1], Done)
    assert sum(isinstance(m, Tokens) for m in flat) < 5  # coalesced into fewer frames
