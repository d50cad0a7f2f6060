"""Go's literals in templates: quoted strings (strconv.Unquote) and untyped number constants."""

from __future__ import annotations

from power.template._error import TemplateError

__all__ = ["parse_number", "unquote"]

_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPES |= {"\\": "\\"}


def unquote(lit: str) -> str:
    """Go's strconv.Unquote for "..." , '...' and `...` literals."""
    quote, body = lit[0], lit[1:-1]
    if quote == "`":
        return body.replace("\r", "")
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = body[i + 1 : i + 2]
        if esc in _ESCAPES or esc == quote:
            out.append(_ESCAPES.get(esc, esc))
            i += 2
        elif esc in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i + 2 : i + 2 + width]
            try:
                out.append(chr(int(digits, 16)) if len(digits) == width else "")
            except ValueError:
                raise TemplateError(f"invalid syntax in {lit}") from None
            i += 2 + width
        elif esc.isdigit():
            digits = body[i + 1 : i + 4]
            try:
                out.append(chr(int(digits, 8)))
            except ValueError:
                raise TemplateError(f"invalid syntax in {lit}") from None
            i += 4
        else:
            raise TemplateError(f"invalid syntax in {lit}")
    return "".join(out)


def parse_number(text: str) -> int | float:
    """An untyped Go constant: integers stay int, anything with a fraction or exponent is float."""
    body = text.lstrip("+-")
    sign = -1 if text.startswith("-") else 1
    lower = body.lower()
    try:
        if lower.startswith(("0x", "0b", "0o")):
            if lower.startswith("0x") and "p" in lower:
                return sign * float.fromhex(body.replace("_", ""))
            return sign * int(body, 0)
        if any(c in lower for c in ".e"):
            return sign * float(body)
        if len(body) > 1 and body.startswith("0"):
            return sign * int(body, 8)
        return sign * int(body, 10)
    except ValueError:
        raise TemplateError(f"bad number syntax: {text!r}") from None
