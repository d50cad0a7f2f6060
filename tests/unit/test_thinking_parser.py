"""The streaming thinking parser: every split of the output gives the same answer."""

from __future__ import annotations

import pytest

from power.parse import ThinkingParser


def run(chunks: list[str], *, primed: bool = False, tags: tuple[str, str] = ("<think>", "</think>")
        ) -> tuple[str, str]:  # fmt: skip
    parser = ThinkingParser(*tags, primed=primed)
    thinking, content = [], []
    for chunk in chunks:
        t, c = parser.feed(chunk)
        thinking.append(t)
        content.append(c)
    t, c = parser.flush()
    return "".join([*thinking, t]), "".join([*content, c])


def every_split(text: str) -> list[list[str]]:
    splits = [[text], list(text)]
    splits += [[text[:i], text[i:]] for i in range(1, len(text))]
    splits += [[text[:i], text[i:j], text[j:]] for i in range(1, len(text), 3)
               for j in range(i + 1, len(text), 5)]  # fmt: skip
    return splits


CASES = [
    ("<think>I ponder.</think>The answer.", "I ponder.", "The answer."),
    ("  \n<think>\n  step one\n</think>\n\n  Hello", "step one\n", "Hello"),
    ("No thinking here <think>x</think>", "", "No thinking here <think>x</think>"),
    ("<think>unfinished thoughts", "unfinished thoughts", ""),
    ("<think></think>", "", ""),
    ("<thin", "", "<thin"),
    ("   ", "", ""),
    ("<think>a < b </thin k></think>ok", "a < b </thin k>", "ok"),
    ("<think>one</think>two</think>", "one", "two</think>"),
]


@pytest.mark.parametrize(("text", "thinking", "content"), CASES)
def test_every_chunk_boundary_gives_the_same_split(text: str, thinking: str, content: str) -> None:
    for chunks in every_split(text):
        assert run(chunks) == (thinking, content), chunks


def test_a_primed_parser_starts_inside_the_block() -> None:
    text = "Let me see.\n</think>\n\nSure."
    for chunks in every_split(text):
        assert run(chunks, primed=True) == ("Let me see.\n", "Sure."), chunks


def test_other_tags_work_the_same() -> None:
    tags = ("<|START_THINKING|>", "<|END_THINKING|>")
    text = "<|START_THINKING|>hmm<|END_THINKING|>done"
    for chunks in every_split(text):
        assert run(chunks, tags=tags) == ("hmm", "done")


def test_only_the_ambiguous_tail_is_held_back() -> None:
    parser = ThinkingParser("<think>", "</think>")
    assert parser.feed("<thi") == ("", "")
    assert parser.feed("nk>abc</") == ("abc", "")
    assert parser.feed("th") == ("", "")
    assert parser.feed("ink> x") == ("", "x")
    assert parser.feed(" y") == ("", " y")


def test_plain_output_streams_through_at_once() -> None:
    parser = ThinkingParser("<think>", "</think>")
    assert parser.feed("Hello") == ("", "Hello")
    assert parser.feed(" <think>") == ("", " <think>")


def test_empty_tags_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        ThinkingParser("", "</think>")
