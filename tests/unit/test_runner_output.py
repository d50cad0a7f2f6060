"""runner.output: UTF-8 across tokens, stop strings held back and trimmed."""

from __future__ import annotations

import pytest

from runner.output import TextAssembler


def _run(pieces: list[bytes], stop: list[str]) -> tuple[str, bool]:
    asm = TextAssembler(stop)
    out = []
    for piece in pieces:
        out.append(asm.feed(piece))
        if asm.stopped:
            break
    out.append(asm.flush())
    return "".join(out), asm.stopped


def test_multibyte_characters_split_across_tokens_come_out_whole() -> None:
    snow = "☃".encode()
    asm = TextAssembler([])
    assert asm.feed(snow[:1]) == ""
    assert asm.feed(snow[1:]) == "☃"


@pytest.mark.parametrize(
    ("pieces", "stop", "expected", "stopped"),
    [
        ([b"Hello", b" wor", b"ld"], [], "Hello world", False),
        ([b"Hello", b"\n", b"User:"], ["\nUser:"], "Hello", True),
        ([b"ab", b"<|im", b"_end|>", b"tail"], ["<|im_end|>"], "ab", True),
        ([b"a<|im", b" no"], ["<|im_end|>"], "a<|im no", False),  # a false start is released
        ([b"x END y"], ["END"], "x ", True),
        ([b"one", b"two"], ["STOP", "two"], "one", True),
    ],
)
def test_stop_strings(pieces: list[bytes], stop: list[str], expected: str, stopped: bool) -> None:
    assert _run(pieces, stop) == (expected, stopped)


def test_text_that_might_start_a_stop_is_held_until_resolved() -> None:
    asm = TextAssembler(["</s>"])
    assert asm.feed(b"hi </") == "hi "
    assert asm.feed(b"b>") == "</b>"
