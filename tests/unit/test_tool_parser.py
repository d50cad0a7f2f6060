"""The streaming tool-call parser: whole calls at every chunk boundary, content otherwise."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from power.api.pipeline import parse_stream
from power.parse import OutputParser, ThinkingParser, ToolFormat, ToolParser, tool_format
from power.parse.jsonend import json_end
from power.parse.tools import MAX_HELD, new_call_id
from proto import TokenLogprob, Tokens

HERMES, MISTRAL, JSON = ToolFormat.HERMES, ToolFormat.MISTRAL, ToolFormat.JSON
NAMES = ("get_weather", "lookup")


def run(fmt: ToolFormat, chunks: list[str], names: tuple[str, ...] = NAMES
        ) -> tuple[str, list[tuple[str, dict[str, Any]]], list[list[int]]]:  # fmt: skip
    """Content, (name, arguments) per call, and the call indexes of each emission."""
    counter = itertools.count()
    parser = ToolParser(fmt, names, make_id=lambda: f"call_{next(counter):08d}")
    content: list[str] = []
    calls: list[dict[str, Any]] = []
    emissions: list[list[int]] = []
    for chunk in [*chunks, None]:
        text, got = parser.feed(chunk) if chunk is not None else parser.flush()
        content.append(text)
        calls += got
        if got:
            emissions.append([c["function"]["index"] for c in got])
    pairs = [(c["function"]["name"], c["function"]["arguments"]) for c in calls]
    assert [c["id"] for c in calls] == [f"call_{i:08d}" for i in range(len(calls))]
    return "".join(content), pairs, emissions


def every_split(text: str) -> list[list[str]]:
    return [[text], list(text)] + [[text[:i], text[i:]] for i in range(1, len(text))]


WEATHER = ("get_weather", {"city": "Paris", "unit": "C"})
LOOKUP = ("lookup", {"q": 'a "quoted" } brace'})

CASES: list[tuple[ToolFormat, str, str, list[tuple[str, dict[str, Any]]]]] = [
    (
        HERMES,
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}'
        "\n</tool_call>",
        "",
        [WEATHER],
    ),
    (
        HERMES,
        'Let me check. <tool_call>{"name": "get_weather", "arguments": '
        '{"city": "Paris", "unit": "C"}}</tool_call>\n<tool_call>{"name": "lookup", '
        '"arguments": {"q": "a \\"quoted\\" } brace"}}</tool_call>\n',
        "Let me check. ",
        [WEATHER, LOOKUP],
    ),
    (
        HERMES,
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}',
        "",
        [WEATHER],
    ),  # unclosed at the end of the output
    (
        HERMES,
        "<tool_call>{not json}</tool_call> after",
        "<tool_call>{not json}</tool_call> after",
        [],
    ),
    (
        HERMES,
        '<tool_call>{"name": "unknown_tool", "arguments": {}}</tool_call>',
        '<tool_call>{"name": "unknown_tool", "arguments": {}}</tool_call>',
        [],
    ),
    (HERMES, "plain answer with a < sign", "plain answer with a < sign", []),
    (HERMES, "<tool_call>{broken", "<tool_call>{broken", []),
    (
        MISTRAL,
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}},'
        ' {"name": "lookup", "arguments": {"q": "a \\"quoted\\" } brace"}}]',
        "",
        [WEATHER, LOOKUP],
    ),
    (MISTRAL, '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "C"}', "", [WEATHER]),
    (MISTRAL, "No tools needed [TOOL", "No tools needed [TOOL", []),
    (MISTRAL, "[TOOL_CALLS] [oops]", "[TOOL_CALLS] [oops]", []),
    (
        JSON,
        '  {"name": "get_weather", "parameters": {"city": "Paris", "unit": "C"}}',
        "",
        [WEATHER],
    ),
    (
        JSON,
        '<|python_tag|>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", '
        '\\"unit\\": \\"C\\"}"}',
        "",
        [WEATHER],
    ),
    (
        JSON,
        '[{"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}]',
        "",
        [WEATHER],
    ),
    (
        JSON,
        'The JSON is {"name": "get_weather", "arguments": {}}',
        'The JSON is {"name": "get_weather", "arguments": {}}',
        [],
    ),
    (JSON, '{"answer": 42} and more', '{"answer": 42} and more', []),
    (
        JSON,
        '{"name": "get_weather", "arguments": {"city": "Par',
        '{"name": "get_weather", "arguments": {"city": "Par',
        [],
    ),
]


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES)
def test_every_chunk_boundary_gives_the_same_calls(
    fmt: ToolFormat, text: str, content: str, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    for chunks in every_split(text):
        got_content, got_calls, _ = run(fmt, chunks)
        assert (got_content, got_calls) == (content, calls), chunks


def test_calls_are_emitted_whole_as_soon_as_they_close() -> None:
    parser = ToolParser(HERMES, NAMES)
    assert parser.feed("Sure. <tool") == ("Sure. ", [])
    assert parser.feed('_call>{"name": "lookup", "arguments": {"q": ') == ("", [])
    content, calls = parser.feed('"x"}}</tool_call>')
    assert content == ""
    assert len(calls) == 1
    call = calls[0]
    assert re.fullmatch(r"call_[a-z0-9]{8}", call["id"])
    assert call["function"] == {"index": 0, "name": "lookup", "arguments": {"q": "x"}}
    content, calls = parser.feed('\n<tool_call>{"name": "lookup", "arguments": {}}</tool_call>')
    assert (content, [c["function"]["index"] for c in calls]) == ("", [1])
    assert parser.flush() == ("", [])


def test_a_mistral_list_is_one_emission_with_running_indexes() -> None:
    text = '[TOOL_CALLS] [{"name": "lookup", "arguments": {}}, {"name": "lookup", "arguments": {}}]'
    _, _, emissions = run(MISTRAL, [text])
    assert emissions == [[0, 1]]


def test_any_name_is_accepted_without_a_tool_list() -> None:
    content, calls, _ = run(HERMES, ['<tool_call>{"name": "x", "arguments": {}}</tool_call>'], ())
    assert (content, calls) == ("", [("x", {})])


def test_argument_key_order_is_preserved() -> None:
    text = '<tool_call>{"name": "lookup", "arguments": {"z": 1, "a": 2, "m": 3}}</tool_call>'
    _, calls, _ = run(HERMES, [text])
    assert list(calls[0][1]) == ["z", "a", "m"]


@pytest.mark.parametrize(
    ("template", "fmt"),
    [
        ("{{ if .Tools }}<tool_call>{{ json .Function }}</tool_call>{{ end }}", HERMES),
        (
            "{%- if tools %}[AVAILABLE_TOOLS]{{ tools }}[/AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]",
            MISTRAL,
        ),
        ('{{ if .Tools }}Respond with JSON {"name": ...}{{ end }}', JSON),
        (None, JSON),
    ],
)
def test_the_format_comes_from_the_template(template: str | None, fmt: ToolFormat) -> None:
    assert tool_format(template) is fmt


def test_json_end_understands_strings_and_nesting() -> None:
    assert json_end('{"a": "}"} tail') == 10
    assert json_end('[1, [2, {"x": "\\"]"}]]') == 22
    assert json_end('{"a": 1') is None
    assert json_end("x{}") is None


def test_call_ids_look_like_ollamas() -> None:
    ids = {new_call_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"call_[a-z0-9]{8}", i) for i in ids)


def test_thinking_then_tool_calls_in_one_stream() -> None:
    text = (
        "<think>The user wants weather.</think>\n"
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}'
        "</tool_call>"
    )
    for chunks in every_split(text):
        parser = OutputParser(
            thinking=ThinkingParser("<think>", "</think>"), tools=ToolParser(HERMES, NAMES)
        )
        pieces = [parser.feed(c) for c in chunks] + [parser.flush()]
        thinking = "".join(p.thinking for p in pieces)
        content = "".join(p.content for p in pieces)
        calls = [c["function"]["name"] for p in pieces for c in p.tool_calls]
        assert (thinking, content, calls) == ("The user wants weather.", "", ["get_weather"])
        assert sum(bool(p.tool_calls) for p in pieces) == 1


# Held-back text is capped at MAX_HELD, and finding a call's end is incremental.

FILLER = "x" * 1000
OVER = MAX_HELD // len(FILLER) + 1  # this many fillers (plus a short head) pass the cap


def feeds(fmt: ToolFormat, chunks: list[str], names: tuple[str, ...] = NAMES
          ) -> tuple[list[str], list[str], ToolParser]:  # fmt: skip
    """Content per feed and then the flush, the names of the calls, and the parser."""
    parser = ToolParser(fmt, names)
    out: list[str] = []
    called: list[str] = []
    for chunk in [*chunks, None]:
        text, calls = parser.feed(chunk) if chunk is not None else parser.flush()
        out.append(text)
        called += [c["function"]["name"] for c in calls]
    return out, called, parser


@pytest.mark.parametrize(
    ("fmt", "before", "head"),
    [
        (JSON, "", '{"name": "lookup", "arguments": {"q": "'),
        (JSON, "", '[{"name": "lookup", "arguments": {"q": "'),
        (JSON, "", "\n" * 10),  # a runaway of leading space: never a value to hold
        (MISTRAL, "Hm. ", '[TOOL_CALLS] [{"name": "lookup", "arguments": {"q": "'),
        (MISTRAL, "", "[TOOL_CALLS]lookup"),  # the name never reaches its [ARGS]
    ],
)
def test_an_unfinished_call_past_the_cap_is_released_as_content(
    fmt: ToolFormat, before: str, head: str
) -> None:
    fill = "\n" * len(FILLER) if head.isspace() else FILLER
    held = [before + head, *[fill] * OVER]
    after = ['"}}', ' {"name": "lookup", "arguments": {}}', " ["]  # no call, nor held, now
    out, called, _ = feeds(fmt, held + after)
    assert out == [before, *[""] * (OVER - 1), "".join(held)[len(before) :], *after, ""]
    assert called == []


@pytest.mark.anyio
async def test_the_release_carries_the_held_log_probabilities_in_order() -> None:
    held = ['{"name": "lookup", "arguments": {"q": "', *[FILLER] * OVER]
    chunks = [*held, "a", "b"]

    async def events() -> AsyncIterator[tuple[str, list[Tokens]]]:
        for i, text in enumerate(chunks):
            lp = TokenLogprob(token=text[:3], logprob=-float(i), utf8=text[:3].encode())
            yield text, [Tokens(id=1, text=text, ids=(i,), logprobs=(lp,))]

    parser = OutputParser(tools=ToolParser(JSON, NAMES))
    got = [
        (p.parsed.content, [lp.logprob for lp in p.logprobs])
        async for p in parse_stream(events(), parser, 0)
    ]
    n = len(held)
    assert got == [
        ("".join(held), [-float(i) for i in range(n)]),  # held back together, released together
        ("a", [-float(n)]),
        ("b", [-float(n + 1)]),
    ]


def test_an_unclosed_tool_call_past_the_cap_is_content_up_to_its_closing_tag() -> None:
    held = ["Sure. <tool_call>", '{"name": "lookup", "arguments": {"q": "', *[FILLER] * OVER]
    after = ["<tool_call> is text in here", '"}}</tool', "_call> ", "and then"]
    call = '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    out, called, _ = feeds(HERMES, [*held, *after, call, " done"])
    assert out == [
        "Sure. ",
        *[""] * (len(held) - 2),
        "".join(held)[len("Sure. ") :],  # the opening tag and all it held
        "<tool_call> is text in here",  # not a call: inside the given-up block
        '"}}',
        "</tool_call> ",  # the block ends here, and parsing is back to normal
        "and then",
        "",
        "done",
        "",
    ]
    assert called == ["get_weather"]


@pytest.mark.parametrize(
    ("fmt", "head", "tail"),
    [
        (HERMES, "<tool_call>", "</tool_call>"),
        (MISTRAL, "[TOOL_CALLS]", ""),
        (JSON, "<|python_tag|>", ""),
    ],
)
def test_the_cap_is_on_what_is_held_and_a_call_up_to_it_still_parses(
    fmt: ToolFormat, head: str, tail: str
) -> None:
    def value(held: int) -> str:
        """A call whose text before its last character is ``held`` long."""
        shell = '{"name": "lookup", "arguments": {"q": ""}}'
        return shell[:-3] + "y" * (held + 1 - len(shell)) + shell[-3:]

    at_cap, past_cap = value(MAX_HELD), value(MAX_HELD + 1)
    out, called, _ = feeds(fmt, [head + at_cap[:-1], at_cap[-1] + tail])
    assert (out, called) == (["", "", ""], ["lookup"])
    out, called, _ = feeds(fmt, [head + past_cap[:-1], past_cap[-1] + tail])
    shown = "" if fmt is JSON else head  # a leading <|python_tag|> is never content
    assert out == [shown + past_cap[:-1], past_cap[-1] + tail, ""]
    assert called == []


@pytest.mark.parametrize(
    ("fmt", "head", "tail"),
    [
        (HERMES, '<tool_call>{"name": "lookup", "arguments": {"q": "', '"}}</tool_call>'),
        (MISTRAL, '[TOOL_CALLS] [{"name": "lookup", "arguments": {"q": "', '"}}]'),
        (MISTRAL, "[TOOL_CALLS]  lookup", '[ARGS] {"q": 1}'),  # a name that goes on and on
        (JSON, ' <|python_tag|> {"name": "lookup", "arguments": {"q": "', '"}}'),
        (JSON, "", '\n{"name": "lookup", "arguments": {}}'),  # and on and on leading space
    ],
)
def test_finding_the_end_of_a_call_reads_each_character_about_once(
    fmt: ToolFormat, head: str, tail: str
) -> None:
    fill = "\n" if not head else "z"
    text = head + fill * 20_000 + tail
    out, called, parser = feeds(fmt, list(text), names=())  # one character per feed
    assert "".join(out) == ""
    assert len(called) == 1
    # Scanning resumes where it stopped; rescanning the held text on each feed (as it once
    # did) would examine some 200 million characters here.
    assert 20_000 <= parser._examined <= len("</tool_call>") * len(text)
