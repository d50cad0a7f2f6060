"""Render a GGUF `tokenizer.chat_template` (Jinja) with minijinja, as HF and llama.cpp do.

The environment matches what chat templates are written against: `trim_blocks` and
`lstrip_blocks` on, Python string/dict methods (`.strip()`, `.split()`, `.items()`…) through
minijinja's pycompat mode, a `tojson` that does not HTML-escape and keeps key order, and the
globals `raise_exception(msg)` and `strftime_now(fmt)`. Rendering is bounded: minijinja's
`FUEL` caps the work, `MAX_OUTPUT` the text (and each `tojson` as it is encoded).

Templates come from uploaded GGUF files, and minijinja's parser can overflow the native stack
on long operator chains, which kills the process. So a template is first checked
(`_jinjacheck`: size, links per tag), then compiled on a thread of its own with a stack large
enough for any template within `MAX_SOURCE`, even one the check let through. Compiled
environments (or the compile error) are cached per template text; rendering the compiled
bytecode does not recurse on expression depth, so it runs on the caller's thread.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import minijinja

from power.template._error import TemplateError
from power.template._jinjacheck import check_source
from proto import MAX_FRAME

__all__ = ["referenced_variables", "render_chat_template"]

log = logging.getLogger(__name__)

_NAME = "chat_template"
FUEL = 20_000_000  # minijinja's instruction budget per rendering: about half a second
MAX_OUTPUT = MAX_FRAME  # characters; no larger prompt can be sent to a runner
# The compile thread's stack. The deepest compile measured costs about 450 bytes of stack
# per source character (a chain of `-`), so 256 MiB covers all of MAX_SOURCE with twice the
# margin; the worst template that passes the check needed 0.7 MiB. Only the pages touched
# are ever resident, and they are unmapped when the thread ends.
COMPILE_STACK = 256 * 1024 * 1024
_JSON_PAD = 16  # longest tojson indent or separator; templates use 2 or 4 spaces
_T = TypeVar("_T")
_stack_lock = threading.Lock()


class _RaisedError(Exception):
    """raise_exception() from inside a template; carries the template's message."""


def _raise_exception(message: object) -> None:
    raise _RaisedError(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    indent: int | str | None = None,
    ensure_ascii: bool = False,
    separators: Sequence[str] | None = None,
    sort_keys: bool = False,
) -> str:
    encoder = json.JSONEncoder(
        ensure_ascii=bool(ensure_ascii),
        indent=_json_indent(indent),
        separators=_json_separators(separators),
        sort_keys=bool(sort_keys),
        default=str,
    )
    # Indentation repeats per nesting level and line, so the text can be far larger than
    # the value: encode in pieces and stop at the limit instead of building it all first.
    size = 0
    parts: list[str] = []
    for part in encoder.iterencode(value):
        size += len(part)
        if size > MAX_OUTPUT:
            raise TemplateError(f"tojson output exceeds {MAX_OUTPUT} characters")
        parts.append(part)
    return "".join(parts)


def _json_indent(indent: object) -> int | str | None:
    if indent is None:
        return None
    if isinstance(indent, int) and not isinstance(indent, bool) and 0 <= indent <= _JSON_PAD:
        return indent
    if isinstance(indent, str) and len(indent) <= _JSON_PAD:
        return indent
    raise TemplateError(f"tojson indent must be 0 to {_JSON_PAD} spaces, not {indent!r:.40}")


def _json_separators(separators: object) -> tuple[str, str] | None:
    if not separators:
        return None
    if isinstance(separators, Sequence) and not isinstance(separators, str):
        pair = list(separators)
        if len(pair) == 2 and all(isinstance(x, str) and len(x) <= _JSON_PAD for x in pair):
            return pair[0], pair[1]
    raise TemplateError(f"tojson separators must be two strings of at most {_JSON_PAD} characters")


@dataclass(frozen=True, slots=True)
class _Compiled:
    env: minijinja.Environment
    variables: frozenset[str]  # top-level names the template reads


def _environment() -> minijinja.Environment:
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
    return env


@functools.lru_cache(maxsize=16)
def _compile(source: str) -> _Compiled | str:
    """The compiled template, or the detail of why it cannot be used (cached either way)."""
    try:
        check_source(source)
        compiled = _on_big_stack(lambda: _compile_now(source))
    except TemplateError as exc:
        log.warning("chat template cannot be used: %s", exc.detail)
        return exc.detail
    log.debug("compiled chat template (%d bytes)", len(source))
    return compiled


def _compile_now(source: str) -> _Compiled:
    # Both parse the source (minijinja re-parses it to list variables): keep them together.
    env = _environment()
    try:
        env.add_template(_NAME, source)
        variables = frozenset(env.undeclared_variables_in_template(_NAME))
    except minijinja.TemplateError as exc:
        raise TemplateError(_describe(exc)) from exc
    return _Compiled(env, variables)


def _on_big_stack(fn: Callable[[], _T]) -> _T:
    """Run fn on a new thread with a COMPILE_STACK stack and return (or raise) its result."""
    outcome: list[_T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=run, name="chat-template-compile", daemon=True)
    try:
        with _stack_lock:  # stack_size is process-wide: set it only around this start
            previous = threading.stack_size(COMPILE_STACK)
            try:
                thread.start()
            finally:
                threading.stack_size(previous)
    except (RuntimeError, ValueError):  # no memory for the stack; the check already bounds
        log.warning("no thread for compiling the chat template; compiling inline")
        return fn()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _compiled(source: str) -> _Compiled:
    compiled = _compile(source)
    if isinstance(compiled, str):
        raise TemplateError(compiled)
    return compiled


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
    env = _compiled(source).env
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
    except TemplateError:  # from tojson's bounds
        raise
    except minijinja.TemplateError as exc:
        cause = exc.__cause__
        if isinstance(cause, _RaisedError):
            raise TemplateError(str(cause)) from exc
        if isinstance(cause, TemplateError):
            raise TemplateError(cause.detail) from exc
        raise TemplateError(_describe(exc)) from exc
    except Exception as exc:  # a helper called by the template (strftime_now, a filter) failed
        raise TemplateError(f"{type(exc).__name__}: {exc}") from exc
    if len(text) > MAX_OUTPUT:
        raise TemplateError(f"template output exceeds {MAX_OUTPUT} characters")
    return text


def referenced_variables(source: str) -> set[str]:
    """Top-level variables a chat template reads (e.g. "tools", "enable_thinking")."""
    return set(_compiled(source).variables)
