"""The functions a template may call: Go's builtins plus the ones Ollama registers."""

from __future__ import annotations

import datetime
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from power.template._error import TemplateError
from power.template._gofmt import go_json, go_type, sprint, sprintf

__all__ = ["FUNCS", "LAZY_FUNCS", "truth"]

_TS_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean"}
_TS_TYPES |= {"array": "any[]", "object": "Record<string, any>", "null": "null"}
_JS_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E"}
_JS_ESCAPES |= {"&": "\\u0026", "=": "\\u003D", "`": "\\u0060"}
_HTML_ESCAPES = {'"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;"}
_HTML_ESCAPES |= {"\x00": "\ufffd"}


def truth(value: object) -> bool:
    """Go template truth: false, 0, nil and empty strings, slices and maps are false."""
    if value is None:
        return False
    if isinstance(value, bool | int | float):
        return value != 0
    if isinstance(value, str | Sequence | Mapping | set | frozenset):
        return len(value) > 0
    return True


def _kind(value: object) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def _eq_one(a: object, b: object) -> bool:
    ka, kb = _kind(a), _kind(b)
    if "nil" in (ka, kb):
        return a is None and b is None
    if ka != kb:
        raise TemplateError("error calling eq: incompatible types for comparison")
    if ka == "other":
        raise TemplateError(f"error calling eq: non-comparable type {go_type(a)}")
    return a == b


def _eq(arg1: object, *args: object) -> bool:
    if not args:
        raise TemplateError("error calling eq: missing argument for comparison")
    return any(_eq_one(arg1, arg) for arg in args)


def _ne(a: object, b: object) -> bool:
    return not _eq_one(a, b)


def _lt(a: object, b: object) -> bool:
    ka, kb = _kind(a), _kind(b)
    if ka != kb:
        raise TemplateError("error calling lt: incompatible types for comparison")
    if ka not in ("number", "string"):
        raise TemplateError(f"error calling lt: invalid type for comparison: {go_type(a)}")
    return bool(a < b)  # type: ignore[operator]


def _le(a: object, b: object) -> bool:
    return _lt(a, b) or _eq_one(a, b)


def _gt(a: object, b: object) -> bool:
    return not _le(a, b)


def _ge(a: object, b: object) -> bool:
    return not _lt(a, b)


def _not(value: object) -> bool:
    return not truth(value)


def _len(value: object) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, Sequence | Mapping | set | frozenset):
        return len(value)
    if value is None:
        raise TemplateError("error calling len: len of nil pointer")
    raise TemplateError(f"error calling len: len of type {go_type(value)}")


def _int_index(index: object, size: int, cap: int | None = None) -> int:
    if not isinstance(index, int) or isinstance(index, bool):
        raise TemplateError(f"cannot index slice/array with type {go_type(index)}")
    if index < 0 or index > (size - 1 if cap is None else cap):
        raise TemplateError(f"error calling index: index out of range: {index}")
    return index


def _index(item: object, *indices: object) -> object:
    for index in indices:
        if item is None:
            raise TemplateError("error calling index: index of untyped nil")
        if isinstance(item, Mapping):
            item = item.get(index)
        elif isinstance(item, str):
            item = item.encode("utf-8")[_int_index(index, len(item.encode("utf-8")))]
        elif isinstance(item, Sequence):
            item = item[_int_index(index, len(item))]
        else:
            raise TemplateError(f"error calling index: can't index item of type {go_type(item)}")
    return item


def _slice(item: object, *indices: object) -> object:
    if isinstance(item, str):
        if len(indices) > 2:
            raise TemplateError("error calling slice: cannot 3-index slice a string")
        raw = item.encode("utf-8")
        bounds = [_int_index(i, len(raw), len(raw)) for i in indices]
        lo, hi = (bounds + [0, len(raw)][len(bounds) :])[:2]
        if lo > hi:
            raise TemplateError(f"error calling slice: invalid slice index: {lo} > {hi}")
        return raw[lo:hi].decode("utf-8", "replace")
    if isinstance(item, Sequence):
        if len(indices) > 3:
            raise TemplateError("error calling slice: too many slice indexes")
        bounds = [_int_index(i, len(item), len(item)) for i in indices[:2]]
        lo, hi = (bounds + [0, len(item)][len(bounds) :])[:2]
        if lo > hi:
            raise TemplateError(f"error calling slice: invalid slice index: {lo} > {hi}")
        return list(item[lo:hi])
    if item is None:
        raise TemplateError("error calling slice: slice of untyped nil")
    raise TemplateError(f"error calling slice: can't slice item of type {go_type(item)}")


def _printf(fmt: object, *args: object) -> str:
    if not isinstance(fmt, str):
        raise TemplateError(f"wrong type for value; expected string; got {go_type(fmt)}")
    return sprintf(fmt, *args)


def _json(value: object) -> str:
    try:
        return go_json(value)
    except TemplateError:  # Ollama ignores Marshal errors and prints ""
        return ""


def _println(*args: object) -> str:
    return " ".join(sprint(a) for a in args) + "\n"


def _html(*args: object) -> str:
    return "".join(_HTML_ESCAPES.get(ch, ch) for ch in sprint(*args))


def _js(*args: object) -> str:
    out = []
    for ch in sprint(*args):
        if ch in _JS_ESCAPES:
            out.append(_JS_ESCAPES[ch])
        elif ord(ch) < 0x20 or not ch.isprintable():
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def _urlquery(*args: object) -> str:
    return urllib.parse.quote_plus(sprint(*args), safe="")


def _current_date(*_: object) -> str:
    return datetime.date.today().isoformat()


def _yesterday_date(*_: object) -> str:
    return (datetime.date.today() - datetime.timedelta(days=1)).isoformat()


def _ts_type(prop: object) -> str:
    if not isinstance(prop, Mapping):
        return "any"
    any_of = prop.get("anyOf")
    if isinstance(any_of, Sequence) and any_of:
        return " | ".join(_ts_type(p) for p in any_of)
    types = prop.get("type")
    if isinstance(types, str):
        types = [types]
    if not isinstance(types, Sequence) or not types:
        return "any"
    return " | ".join(_TS_TYPES.get(str(t), "any") for t in types)


def _unreachable(*_: object) -> object:
    raise TemplateError("and/or are evaluated lazily by the executor")


FUNCS: dict[str, Callable[..., Any]] = {
    "and": _unreachable,
    "or": _unreachable,
    "not": _not,
    "eq": _eq,
    "ne": _ne,
    "lt": _lt,
    "le": _le,
    "gt": _gt,
    "ge": _ge,
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": sprint,
    "printf": _printf,
    "println": _println,
    "html": _html,
    "js": _js,
    "urlquery": _urlquery,
    # Registered by Ollama.
    "json": _json,
    "currentDate": _current_date,
    "yesterdayDate": _yesterday_date,
    "toTypeScriptType": _ts_type,
}
LAZY_FUNCS = frozenset({"and", "or"})
