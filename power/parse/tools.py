"""Tool calls out of streamed model output, in the three shapes models write them.

* ``hermes``: ``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` anywhere in the output
  (Qwen, Hermes, many fine-tunes); an unclosed block at the end of the output still counts.
* ``mistral``: ``[TOOL_CALLS] [{"name": …, "arguments": {…}}, …]`` or the newer
  ``[TOOL_CALLS]name[ARGS]{…}``.
* ``json``: the output *starts* with a JSON object or array of calls (Llama 3.x and others,
  optionally after ``<|python_tag|>``); output that starts otherwise is plain content.

The format is chosen from the template text. While output may still be a tool call it is held
back; a call is emitted whole once its JSON is complete, never as partial arguments. Text that
turns out not to be a valid call (malformed JSON, an unknown tool name) falls back to content.
"""

from __future__ import annotations

import enum
import json
import secrets
import string
from collections.abc import Callable, Collection
from typing import Any

from power.parse.thinking import partial_suffix

__all__ = ["ToolFormat", "ToolParser", "new_call_id", "tool_format"]

_HERMES_OPEN, _HERMES_CLOSE = "<tool_call>", "</tool_call>"
_MISTRAL_TAG, _MISTRAL_ARGS = "[TOOL_CALLS]", "[ARGS]"
_PYTHON_TAG = "<|python_tag|>"
_ID_ALPHABET = string.ascii_lowercase + string.digits


class ToolFormat(enum.StrEnum):
    HERMES = "hermes"
    MISTRAL = "mistral"
    JSON = "json"


def tool_format(template_text: str | None) -> ToolFormat:
    """Which shape the model was taught, judged from the template that renders its prompt."""
    text = template_text or ""
    if _HERMES_OPEN in text:
        return ToolFormat.HERMES
    if _MISTRAL_TAG in text:
        return ToolFormat.MISTRAL
    return ToolFormat.JSON


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def json_end(text: str, start: int = 0) -> int | None:
    """The index just past the JSON object/array opening at ``text[start]``, if complete."""
    if start >= len(text) or text[start] not in "[{":
        return None
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _one_call(value: object, names: Collection[str]) -> tuple[str, dict[str, Any]] | None:
    if not isinstance(value, dict):
        return None
    inner = value.get("function")
    if isinstance(inner, dict):
        value = inner
    name = value.get("name")
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return None
    if not isinstance(name, str) or not name or not isinstance(args, dict):
        return None
    if names and name not in names:
        return None
    return name, args


def parse_calls(text: str, names: Collection[str]) -> list[tuple[str, dict[str, Any]]] | None:
    """``text`` as one call or a list of calls, or None if it is not exactly that."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = [_one_call(item, names) for item in items]
    if not calls or any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


class ToolParser:
    """Feed text as it streams; get back ``(content, calls)`` that is now certain."""

    def __init__(
        self,
        fmt: ToolFormat,
        names: Collection[str] = (),
        *,
        make_id: Callable[[], str] = new_call_id,
    ) -> None:
        self.format = fmt
        self._names = frozenset(names)
        self._make_id = make_id
        self._buf = ""
        self._inside = False  # after an opening tag / inside a leading JSON value
        self._plain = False  # json format: the output did not start with a call
        self._eat_space = False  # whitespace right after a call is not content
        self._index = 0
        self._step = {
            ToolFormat.HERMES: self._hermes,
            ToolFormat.MISTRAL: self._mistral,
            ToolFormat.JSON: self._json,
        }[fmt]

    def _calls(self, found: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        out = []
        for name, args in found:
            fn = {"index": self._index, "name": name, "arguments": args}
            out.append({"id": self._make_id(), "function": fn})
            self._index += 1
        self._eat_space = True
        return out

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        self._buf += text
        content: list[str] = []
        calls: list[dict[str, Any]] = []
        while self._buf:
            if self._eat_space:
                self._buf = self._buf.lstrip()
                if not self._buf:
                    break
                self._eat_space = False
            if not self._step(content, calls):
                break
        return "".join(content), calls

    def flush(self) -> tuple[str, list[dict[str, Any]]]:
        """The end of the output: an unfinished call is tried once more, else it is content."""
        buf, self._buf = self._buf, ""
        if not self._inside:
            return ("" if self._eat_space and not buf.strip() else buf), []
        self._inside = False
        body = buf
        if self.format is ToolFormat.HERMES:
            found = parse_calls(buf, self._names)
            body = _HERMES_OPEN + buf
        elif self.format is ToolFormat.MISTRAL:
            found = self._mistral_calls(buf)
            body = _MISTRAL_TAG + buf
        else:
            found = parse_calls(buf, self._names)
        return ("", self._calls(found)) if found else (body, [])

    # Each step consumes from the buffer and returns whether to keep going.

    def _tagged_content(self, tag: str, content: list[str]) -> bool:
        at = self._buf.find(tag)
        if at < 0:
            keep = partial_suffix(self._buf, tag)
            content.append(self._buf[: len(self._buf) - keep])
            self._buf = self._buf[len(self._buf) - keep :]
            return False
        content.append(self._buf[:at])
        self._buf = self._buf[at + len(tag) :]
        self._inside = True
        return True

    def _hermes(self, content: list[str], calls: list[dict[str, Any]]) -> bool:
        if not self._inside:
            return self._tagged_content(_HERMES_OPEN, content)
        body, found, after = self._buf.partition(_HERMES_CLOSE)
        if not found:
            return False
        self._buf, self._inside = after, False
        parsed = parse_calls(body, self._names)
        if parsed:
            calls.extend(self._calls(parsed))
        else:
            content.append(_HERMES_OPEN + body + _HERMES_CLOSE)
        return True

    def _mistral_calls(self, body: str) -> list[tuple[str, dict[str, Any]]] | None:
        body = body.strip()
        if body.startswith(("[", "{")):
            return parse_calls(body, self._names)
        name, found, args = body.partition(_MISTRAL_ARGS)
        if not found:
            return None
        try:
            value = json.loads(args)
        except ValueError:
            return None
        call = _one_call({"name": name.strip(), "arguments": value}, self._names)
        return [call] if call else None

    def _mistral(self, content: list[str], calls: list[dict[str, Any]]) -> bool:
        if not self._inside:
            return self._tagged_content(_MISTRAL_TAG, content)
        buf = self._buf
        start = len(buf) - len(buf.lstrip())
        if start < len(buf) and buf[start] not in "[{":
            at = buf.find(_MISTRAL_ARGS, start)
            if at < 0:
                return False  # the name is still streaming in
            start = at + len(_MISTRAL_ARGS)
            while start < len(buf) and buf[start].isspace():
                start += 1
        end = json_end(buf, start)
        if end is None:
            return False
        self._buf, self._inside = buf[end:], False
        parsed = self._mistral_calls(buf[:end])
        if parsed:
            calls.extend(self._calls(parsed))
        else:
            content.append(_MISTRAL_TAG + buf[:end])
        return True

    def _json(self, content: list[str], calls: list[dict[str, Any]]) -> bool:
        if self._plain:
            content.append(self._buf)
            self._buf = ""
            return False
        if not self._inside:
            lead = self._buf.lstrip()
            if lead.startswith(_PYTHON_TAG):
                lead = lead[len(_PYTHON_TAG) :].lstrip()
            elif _PYTHON_TAG.startswith(lead):
                return False  # nothing but (part of) the tag yet
            if not lead:
                return False
            if lead[0] not in "[{":
                self._plain = True
                return True
            self._buf, self._inside = lead, True
        end = json_end(self._buf)
        if end is None:
            return False
        body, self._buf, self._inside = self._buf[:end], self._buf[end:], False
        parsed = parse_calls(body, self._names)
        if parsed:
            calls.extend(self._calls(parsed))
        else:
            content.append(body)
            self._plain = True
        return True
