from __future__ import annotations

import math

import pytest

from power.duration import (
    format_go_duration,
    parse_duration_env,
    parse_go_duration,
    parse_keep_alive,
)
from power.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (300, 300.0),
        (1.5, 1.5),
        (0.25, 0.25),
        (-1, math.inf),
        (-0.5, math.inf),
        ("0", 0.0),
        ("-0", 0.0),
        ("+0", 0.0),
        ("0s", 0.0),
        ("5m", 300.0),
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("300ms", 0.3),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("+5m", 300.0),
        ("2us", 2e-6),
        ("2\u00b5s", 2e-6),
        ("2\u03bcs", 2e-6),
        ("7ns", 7e-9),
        ("-1m", math.inf),
        ("-1ns", math.inf),
        ("2562047h", 2562047 * 3600.0),
        (9e9, 9e9),
        # past Go's longest duration (about 292 years) is forever, as Ollama's overflow makes it
        (1e308, math.inf),
        (9.3e9, math.inf),
        (2**70, math.inf),
    ],
)
def test_parse_keep_alive_accepts(value: object, seconds: float) -> None:
    assert parse_keep_alive(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("3600", 'time: missing unit in duration "3600"'),
        ("-5", 'time: missing unit in duration "-5"'),
        ("5x", 'time: unknown unit "x" in duration "5x"'),
        ("5 m", 'time: unknown unit " m" in duration "5 m"'),
        ("", 'time: invalid duration ""'),
        ("-", 'time: invalid duration "-"'),
        ("m", 'time: invalid duration "m"'),
        (".s", 'time: invalid duration ".s"'),
        ("1h 30m", 'time: unknown unit "h " in duration "1h 30m"'),
        ("forever", 'time: invalid duration "forever"'),
        ("9999999h", 'time: invalid duration "9999999h"'),
        (True, "Unsupported type: 'bool'"),
        (False, "Unsupported type: 'bool'"),
        ([1], "Unsupported type: '[]interface {}'"),
        ({"s": 1}, "Unsupported type: 'map[string]interface {}'"),
        (math.nan, "keep_alive must be a number of seconds, not NaN"),
    ],
)
def test_parse_keep_alive_rejects(value: object, message: str) -> None:
    with pytest.raises(InvalidRequestError) as excinfo:
        parse_keep_alive(value)
    assert str(excinfo.value) == message
    assert excinfo.value.status == 400


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5m", 300.0),
        ("3600", 3600.0),
        ("+10", 10.0),
        ("0", 0.0),
        ("-1", math.inf),
        ("-1m", math.inf),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("9223372036", 9223372036.0),
        ("9223372037", math.inf),
        ("1" + "0" * 400, math.inf),  # no float overflow
        ("-" + "9" * 400, math.inf),
    ],
)
def test_parse_duration_env(text: str, seconds: float) -> None:
    assert parse_duration_env(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1.5", "ten", "5 m", "0x10", "1_000"])
def test_parse_duration_env_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_env(text)


def test_parse_go_duration_keeps_sign() -> None:
    assert parse_go_duration("-1h30m") == -5400.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (300, "5m0s"),
        (5400, "1h30m0s"),
        (3600, "1h0m0s"),
        (1.5, "1.5s"),
        (61.25, "1m1.25s"),
        (0.3, "300ms"),
        (0.0015, "1.5ms"),
        (2e-6, "2\u00b5s"),
        (7e-9, "7ns"),
        (-90, "-1m30s"),
        (math.inf, "2562047h47m16.854775807s"),
    ],
)
def test_format_go_duration(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


@pytest.mark.parametrize("text", ["5m0s", "1h30m0s", "300ms", "1.5s", "2\u00b5s", "7ns"])
def test_format_round_trips(text: str) -> None:
    assert format_go_duration(parse_go_duration(text)) == text
