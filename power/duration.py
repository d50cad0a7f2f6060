"""Keep-alive and other durations, parsed and printed the way Ollama (Go) does.

Everything here works in float seconds; `math.inf` means "forever" (Go's max `time.Duration`).

* `parse_go_duration` is Go's `time.ParseDuration`: `"300ms"`, `"10m"`, `"1h30m"`, `"-1.5h"`,
  `"0"`. A unitless number other than `"0"` is an error.
* `parse_keep_alive` is the request-body rule (`keep_alive` on generate/chat/embed): a JSON number
  is seconds, a string is a Go duration, negative or past Go's longest duration (about 292
  years) means forever, other JSON types are a 400.
* `parse_duration_env` is the `OLLAMA_KEEP_ALIVE` / `OLLAMA_LOAD_TIMEOUT` rule: a Go duration or
  integer seconds.
* `format_go_duration` is Go's `Duration.String()` (`"5m0s"`), for logs and the config dump.
"""

from __future__ import annotations

import math
import re

from power.errors import InvalidRequestError

__all__ = [
    "FOREVER",
    "MAX_SECONDS",
    "format_go_duration",
    "parse_duration_env",
    "parse_go_duration",
    "parse_keep_alive",
]

FOREVER = math.inf

_NS_PER_S = 1_000_000_000
_MAX_NS = (1 << 63) - 1  # Go's max time.Duration, about 292 years
_UNIT_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek small letter mu
    "ms": 1_000_000,
    "s": _NS_PER_S,
    "m": 60 * _NS_PER_S,
    "h": 3600 * _NS_PER_S,
}
_COMPONENT = re.compile(r"(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?(?P<unit>[^0-9.]*)")
_GO_INT = re.compile(r"[+-]?[0-9]+")

# Go's reflect.TypeOf names for what encoding/json produces from each JSON value.
_GO_JSON_TYPES: dict[type, str] = {
    bool: "bool",
    list: "[]interface {}",
    tuple: "[]interface {}",
    dict: "map[string]interface {}",
}


def _parse_go_duration_ns(text: str) -> int:
    """Go's `time.ParseDuration`, in integer nanoseconds. Raises `ValueError` with Go's message."""
    orig = text
    neg = False
    if text[:1] in ("-", "+"):
        neg = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise ValueError(f'time: invalid duration "{orig}"')
    total = 0
    while text:
        if text[0] not in ".0123456789":
            raise ValueError(f'time: invalid duration "{orig}"')
        match = _COMPONENT.match(text)
        assert match is not None  # the pattern matches any string, possibly empty
        whole, frac, unit = match.group("int"), match.group("frac"), match.group("unit")
        if not whole and not frac:
            raise ValueError(f'time: invalid duration "{orig}"')
        if not unit:
            raise ValueError(f'time: missing unit in duration "{orig}"')
        scale = _UNIT_NS.get(unit)
        if scale is None:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{orig}"')
        value = int(whole or "0") * scale
        if frac:
            value += int(frac) * scale // 10 ** len(frac)
        total += value
        if total > 1 << 63:
            raise ValueError(f'time: invalid duration "{orig}"')
        text = text[match.end() :]
    if neg:
        return -total
    if total > _MAX_NS:
        raise ValueError(f'time: invalid duration "{orig}"')
    return total


def parse_go_duration(text: str) -> float:
    """Parse Go duration syntax into seconds (sign kept). Raises `ValueError` if malformed."""
    return _parse_go_duration_ns(text) / _NS_PER_S


MAX_SECONDS = _MAX_NS / _NS_PER_S  # Go's longest duration; anything longer is forever


def _forever_if_negative(seconds: float) -> float:
    """Negative and longer than Go's longest duration both mean forever (Ollama's int64
    conversion makes the latter negative)."""
    return FOREVER if seconds < 0 or seconds > MAX_SECONDS else seconds


def parse_keep_alive(value: object) -> float:
    """A request body's `keep_alive`, in seconds; `math.inf` = forever, `0` = unload when done.

    The caller handles an omitted field (`None`): it means "use the default, or keep what the
    loaded runner already has", which only the scheduler knows.
    """
    if isinstance(value, bool) or value is None:
        go_type = "bool" if isinstance(value, bool) else "<nil>"
        raise InvalidRequestError(f"Unsupported type: '{go_type}'")
    if isinstance(value, int | float):
        seconds = float(value)
        if math.isnan(seconds):
            raise InvalidRequestError("keep_alive must be a number of seconds, not NaN")
        return _forever_if_negative(seconds)
    if isinstance(value, str):
        try:
            return _forever_if_negative(parse_go_duration(value))
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
    go_type = _GO_JSON_TYPES.get(type(value), type(value).__name__)
    raise InvalidRequestError(f"Unsupported type: '{go_type}'")


def parse_duration_env(text: str) -> float:
    """`OLLAMA_KEEP_ALIVE`-style value: Go duration or integer seconds; negative -> forever.

    `text` should already be trimmed (see `power.config`). Raises `ValueError` when it is
    neither form; the caller then keeps its default.
    """
    try:
        seconds = parse_go_duration(text)
    except ValueError:
        if not _GO_INT.fullmatch(text):
            raise
        whole = int(text)
        seconds = float(whole) if abs(whole) <= MAX_SECONDS else FOREVER  # no float overflow
    return _forever_if_negative(seconds)


def _frac(value: int, digits: int) -> str:
    """`value` split as `int.frac` with `digits` fraction digits, trailing zeros dropped."""
    whole, rest = divmod(value, 10**digits)
    frac = f"{rest:0{digits}d}".rstrip("0")
    return f"{whole}.{frac}" if frac else str(whole)


def format_go_duration(seconds: float) -> str:
    """Go's `Duration.String()`: `300` -> `"5m0s"`, `0.3` -> `"300ms"`, `inf` -> max duration."""
    if math.isnan(seconds):
        raise ValueError("cannot format NaN as a duration")
    if math.isinf(seconds):
        ns = _MAX_NS if seconds > 0 else -(1 << 63)
    else:
        ns = max(-(1 << 63), min(_MAX_NS, round(seconds * _NS_PER_S)))
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < _NS_PER_S:
        if u == 0:
            return "0s"
        if u < 1_000:
            return f"{sign}{u}ns"
        if u < 1_000_000:
            return f"{sign}{_frac(u, 3)}\u00b5s"
        return f"{sign}{_frac(u, 6)}ms"
    secs = _frac(u % (60 * _NS_PER_S), 9) + "s"
    minutes = u // (60 * _NS_PER_S)
    if minutes == 0:
        return sign + secs
    hours, minutes = divmod(minutes, 60)
    if hours == 0:
        return f"{sign}{minutes}m{secs}"
    return f"{sign}{hours}h{minutes}m{secs}"
