"""Go-compatible value formatting: fmt's %v/Sprint/Sprintf and encoding/json's Marshal.

Values are plain Python data (str, int, float, bool, None, dict, list). Dicts print as JSON
because the maps Ollama hands its templates (tool-call arguments, tool properties) implement
`String()` as JSON; lists print Go-style (`[a b]`) unless they are a `JSONList`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from power.template._error import TemplateError

__all__ = ["JSONList", "go_json", "go_quote", "go_type", "sprint", "sprintf", "to_str"]

_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_JSON_ESCAPES |= {"\b": "\\b", "\f": "\\f", "<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}
_JSON_ESCAPES |= {"\u2028": "\\u2028", "\u2029": "\\u2029"}
_JSON_SPECIAL = re.compile(r'[\x00-\x1f"\\<>&\u2028\u2029]')
_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_QUOTE_ESCAPES |= {"\t": "\\t", "\v": "\\v", "\\": "\\\\", '"': '\\"'}
_VERB = re.compile(r"%([-+# 0]*)(\d*)(?:\.(\d*))?([a-zA-Z%])")


class JSONList(list[Any]):
    """A list that prints as JSON, like Ollama's template `Tools` type."""


def go_type(value: object) -> str:
    """The Go type name a value would have inside a template."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    if isinstance(value, Sequence):
        return "[]interface {}"
    return type(value).__name__


def _digits(f: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of abs(f) and the decimal point position."""
    _, digit_tuple, exp = Decimal(repr(abs(f))).normalize().as_tuple()
    if not isinstance(exp, int):  # NaN and Inf are handled by the caller
        raise ValueError(f)
    digits = "".join(map(str, digit_tuple))
    return digits, len(digits) + exp


def _float(f: float, *, json: bool) -> str:
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, f) < 0 else ""
    if f == 0:
        return sign + "0"
    digits, dp = _digits(f)
    exp = dp - 1
    use_e = (abs(f) < 1e-6 or abs(f) >= 1e21) if json else (exp < -4 or exp >= 6)
    if use_e:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        width = 1 if json and exp < 0 else 2
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):0{width}d}"
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return sign + digits + "0" * (dp - len(digits))
    return f"{sign}{digits[:dp]}.{digits[dp:]}"


def _json_string(s: str) -> str:
    def repl(m: re.Match[str]) -> str:
        ch = m.group()
        return _JSON_ESCAPES.get(ch) or f"\\u{ord(ch):04x}"

    s = s.encode("utf-8", "replace").decode("utf-8")
    return '"' + _JSON_SPECIAL.sub(repl, s) + '"'


def go_json(value: object) -> str:
    """Compact JSON as Go's json.Marshal writes it (HTML-safe escapes, Go float format)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise TemplateError(f"json: unsupported value: {_float(value, json=True)}")
        return _float(value, json=True)
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, Mapping):
        items = (f"{_json_string(str(k))}:{go_json(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, Sequence | set | frozenset):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    return _json_string(str(value))


def to_str(value: object, *, top: bool = True) -> str:
    """fmt.Sprint of one value; a top-level nil prints as "" (a zero-valued field)."""
    if value is None:
        return "" if top else "<nil>"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value, json=False)
    if isinstance(value, Mapping | JSONList):
        return go_json(value)
    if isinstance(value, Sequence):
        return "[" + " ".join(to_str(v, top=False) for v in value) + "]"
    return str(value)


def sprint(*args: object) -> str:
    """fmt.Sprint: a space between operands when neither side is a string."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(to_str(arg, top=False))
    return "".join(out)


def go_quote(s: str) -> str:
    """strconv.Quote."""
    out = ['"']
    for ch in s:
        if ch in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _bad(verb: str, arg: object) -> str:
    if arg is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({go_type(arg)}={to_str(arg, top=False)})"


def _format_one(flags: str, prec: str | None, verb: str, arg: object) -> str:
    is_int = isinstance(arg, int) and not isinstance(arg, bool)
    if verb == "v":
        return go_quote(arg) if "#" in flags and isinstance(arg, str) else to_str(arg, top=False)
    if verb == "s":
        if isinstance(arg, str):
            return arg if prec is None else arg[: int(prec or 0)]
        if is_int or isinstance(arg, float | bool):
            return _bad(verb, arg)
        return to_str(arg, top=False)
    if verb == "q":
        if isinstance(arg, str):
            return go_quote(arg)
        return "'" + chr(arg) + "'" if isinstance(arg, int) and is_int else _bad(verb, arg)
    if verb == "t":
        return to_str(arg) if isinstance(arg, bool) else _bad(verb, arg)
    if verb in "dxXobc" and isinstance(arg, int) and is_int:
        if verb == "c":
            return chr(arg)
        sign = "+" if "+" in flags and arg >= 0 else ""
        return sign + format(arg, {"d": "d", "x": "x", "X": "X", "o": "o", "b": "b"}[verb])
    if verb in "xX" and isinstance(arg, str):
        return format(int.from_bytes(arg.encode(), "big"), verb) if arg else ""
    if verb in "feEgG" and isinstance(arg, float):
        sign = "+" if "+" in flags and arg >= 0 else ""
        if verb in "gG" and prec is None:
            return sign + _float(arg, json=False)
        return sign + format(arg, f".{int(prec) if prec else (0 if prec == '' else 6)}{verb}")
    return _bad(verb, arg)


def _too_large(number: str | None) -> bool:
    """Go's fmt refuses a width or precision past a million (its ``parsenum`` overflow)."""
    value = 0
    for digit in number or "":
        if value > 1_000_000:
            return True
        value = value * 10 + int(digit)
    return False


def sprintf(fmt: str, *args: object) -> str:
    """fmt.Sprintf for the common verbs (%v %s %d %q %f %e %g %x %t %c and %%)."""
    out: list[str] = []
    pos = argi = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.groups()
        if _too_large(width) or _too_large(prec):
            out.append("%!(NOVERB)")  # Go gives up on the rest of the format here
            pos = len(fmt)
            break
        if verb == "%":
            out.append("%")
            continue
        if argi >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        text = _format_one(flags, prec, verb, args[argi])
        argi += 1
        if width and len(text) < int(width):
            if "-" in flags:
                text = text.ljust(int(width))
            elif "0" in flags and verb in "dfeEgGxX":
                neg = text.startswith(("-", "+"))
                body = text[1:] if neg else text
                text = (text[0] if neg else "") + body.rjust(int(width) - neg, "0")
            else:
                text = text.rjust(int(width))
        out.append(text)
    out.append(fmt[pos:])
    if argi < len(args):
        extra = ", ".join(f"{go_type(a)}={to_str(a, top=False)}" for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)
