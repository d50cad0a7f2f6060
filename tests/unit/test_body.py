"""``decode_json``: the one path from request bytes to JSON, bounded in depth."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from power.api.body import MAX_DEPTH, decode_json
from power.errors import InvalidRequestError


class Body(msgspec.Struct):
    model: str = ""
    options: dict[str, Any] | None = None


def nested(depth: int, leaf: str = "1") -> bytes:
    return ("[" * depth + leaf + "]" * depth).encode()


def test_nesting_up_to_the_limit_decodes() -> None:
    assert decode_json(nested(MAX_DEPTH), Any) is not None  # type: ignore[arg-type]
    deep = b'{"options": {"a": ' + nested(MAX_DEPTH - 2) + b"}}"
    assert decode_json(deep, Body).options is not None
    # many brackets side by side are not depth
    assert len(decode_json(b"[" + b"[], " * 5000 + b"[]]", list)) == 5001
    assert decode_json(b"null", Any) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [
        nested(MAX_DEPTH + 1),
        nested(5000),  # past what the interpreter can decode at all
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b'{"options": {"a": ' + nested(MAX_DEPTH - 1) + b"}}",
    ],
)
def test_deeper_nesting_is_a_400(body: bytes) -> None:
    kind: Any = Body if body.startswith(b'{"options"') else Any
    with pytest.raises(InvalidRequestError, match=f"nests more than {MAX_DEPTH} levels"):
        decode_json(body, kind)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "invalid JSON: Input data was truncated"),
        (b'{"model": 1}', "Expected `str`, got `int` - at `$.model`"),
        (b'{"model": "m", "options": {"num_ctx": 1e999}}', "Number out of range"),
    ],
)
def test_bad_json_is_a_400_saying_why(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message.replace("$", r"\$")):
        decode_json(body, Body)


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (rb'"\ud83d"', "\ufffd"),  # half an emoji, at the end of the string
        (rb'"a\udc00b"', "a\ufffdb"),  # a low half alone
        (rb'"\ud83d\u0041"', "\ufffdA"),  # a high half before no low one
        (rb'"\uD83D\uDE00 and \ud83d"', "\U0001f600 and \ufffd"),  # a pair stays a pair
        (rb'"\\ud800"', "\\ud800"),  # an escaped backslash, then text: no escape at all
    ],
)
def test_a_lone_surrogate_becomes_the_replacement_character_as_in_go(
    body: bytes, text: str
) -> None:
    """Go's decoder (Ollama's) replaces what msgspec refuses; a JavaScript client that cut a
    string in half an emoji sends it."""
    assert decode_json(body, str) == text
    assert decode_json(b'{"model": ' + body + b"}", Body).model == text


def test_a_surrogate_escape_in_otherwise_bad_json_is_still_a_400() -> None:
    with pytest.raises(InvalidRequestError, match="invalid JSON"):
        decode_json(rb'{"model": "\ud83d"', Body)
