"""Render a GGUF `tokenizer.chat_template` (Jinja) with minijinja, as HF and llama.cpp do.

The environment matches what chat templates are written against: `trim_blocks` and
`lstrip_blocks` on, Python string/dict methods (`.strip()`, `.split()`, `.items()`…) through
minijinja's pycompat mode, a `tojson` that does not HTML-escape and keeps key order, and the
globals `raise_exception(msg)` and `strftime_now(fmt)`. Compiled environments are cached per
template text. Rendering is bounded: minijinja's `FUEL` caps the work, `MAX_OUTPUT` the text.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import minijinja

from power.template._error import TemplateError
from proto import MAX_FRAME

__all__ = ["referenced_variables", "render_chat_template"]

log = logging.getLogger(__name__)

_NAME = "chat_template"
FUEL = 20_000_000  # minijinja's instruction budget per rendering: about half a second
MAX_OUTPUT = MAX_FRAME  # characters; no larger prompt can be sent to a runner


class _RaisedError(Exception):
    """raise_exception() from inside a template; carries the template's message."""


def _raise_exception(message: object) -> None:
    raise _RaisedError(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    indent: int | None = None,
    ensure_ascii: bool = False,
    separators: Sequence[str] | None = None,
    sort_keys: bool = False,
) -> str:
    seps = (separators[0], separators[1]) if separators else None
    return json.dumps(
        value,
        indent=indent,
        ensure_ascii=ensure_ascii,
        separators=seps,
        sort_keys=sort_keys,
        default=str,
    )


@functools.lru_cache(maxsize=16)
def _environment(source: str) -> minijinja.Environment:
    env = minijinja.Environment(
        fuel=FUEL,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        undefined_behavior="lenient",
        pycompat=True,
    )
    env.add_filter("tojson", _tojson)
    env.add_global("raise_exception", _raise_exception)
    env.add_global("strftime_now", _strftime_now)
    try:
        env.add_template(_NAME, source)
    except minijinja.TemplateError as exc:
        raise TemplateError(_describe(exc)) from exc
    log.debug("compiled chat template (%d bytes)", len(source))
    return env


def _describe(exc: minijinja.TemplateError) -> str:
    detail = exc.detail or exc.kind
    return f"{detail} (line {exc.line})" if exc.line else str(detail)


def render_chat_template(
    source: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    bos_token: str | None = None,
    eos_token: str | None = None,
    **kwargs: Any,
) -> str:
    """Render a chat template; errors (including raise_exception) raise TemplateError.

    Extra keyword arguments (e.g. `enable_thinking`, `reasoning_effort`) become template
    variables, like HF's and llama.cpp's `chat_template_kwargs`.
    """
    env = _environment(source)
    context: dict[str, Any] = {
        "messages": [dict(m) for m in messages],
        "tools": [dict(t) for t in tools] if tools else None,
        "add_generation_prompt": add_generation_prompt,
        "bos_token": bos_token or "",
        "eos_token": eos_token or "",
    }
    context.update(kwargs)
    try:
        text: str = env.render_template(_NAME, **context)
    except _RaisedError as exc:
        raise TemplateError(str(exc)) from exc
    except minijinja.TemplateError as exc:
        cause = exc.__cause__
        if isinstance(cause, _RaisedError):
            raise TemplateError(str(cause)) from exc
        raise TemplateError(_describe(exc)) from exc
    except Exception as exc:  # a helper called by the template (strftime_now, a filter) failed
        raise TemplateError(f"{type(exc).__name__}: {exc}") from exc
    if len(text) > MAX_OUTPUT:
        raise TemplateError(f"template output exceeds {MAX_OUTPUT} characters")
    return text


def referenced_variables(source: str) -> set[str]:
    """Top-level variables a chat template reads (e.g. "tools", "enable_thinking")."""
    try:
        return set(_environment(source).undeclared_variables_in_template(_NAME))
    except minijinja.TemplateError as exc:
        raise TemplateError(_describe(exc)) from exc
