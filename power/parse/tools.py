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

Holding back is bounded: a candidate that grows past ``MAX_HELD`` characters without completing
is given up and released as content (see ``MAX_HELD``). Finding where a call ends is
incremental, so a stream of N chunks costs time linear in its length, not N times it.
"""

from __future__ import annotations

import enum
import json
import secrets
import string
from collections.abc import Callable, Collection
from typing import Any

from power.parse.jsonend import JsonEnd
from power.parse.thinking import partial_suffix

__all__ = ["MAX_HELD", "ToolFormat", "ToolParser", "new_call_id", "tool_format"]

MAX_HELD = 64 * 1024
"""The most characters held back as a possible tool call that has not completed. Past it the
candidate is given up: everything held is released as content (so the client, and the
log-probabilities waiting on it, are no longer starved) and the rest of that candidate streams as
content too: up to its ``</tool_call>`` for hermes, the rest of the output for the other formats,
which have no closing mark to resume after. Real calls are far shorter; this only stops a
runaway or unterminated reply from being buffered (and held from the client) forever."""

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
        self._plain = False  # json, mistral: the rest of the output is content
        self._skip = False  # hermes: inside a given-up block, content up to its closing tag
        self._eat_space = False  # whitespace right after a call is not content
        self._index = 0
        # Scan state for the held buffer, reset whenever its front is consumed (``_rebase``):
        self._scan = 0  # how far the buffer has been searched for what the step waits on
        self._named = False  # mistral: a name came first, so ``[ARGS]`` is awaited
        self._tagged = False  # the lead passed its tag: json ``<|python_tag|>``, mistral ``[ARGS]``
        self._json: JsonEnd | None = None  # where the held call's JSON starts, once known
        self._examined = 0  # characters scanned for held calls in all; tests check it is linear
        self._step = {
            ToolFormat.HERMES: self._hermes,
            ToolFormat.MISTRAL: self._mistral,
            ToolFormat.JSON: self._json_step,
        }[fmt]

    def _calls(self, found: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        out = []
        for name, args in found:
            fn = {"index": self._index, "name": name, "arguments": args}
            out.append({"id": self._make_id(), "function": fn})
            self._index += 1
        self._eat_space = True
        return out

    def _rebase(self, buf: str, *, inside: bool) -> None:
        """Hold ``buf`` (what is left once the front was consumed), with no scanning done yet."""
        self._buf, self._inside = buf, inside
        self._scan, self._named, self._tagged, self._json = 0, False, False, None

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        self._buf += text
        content: list[str] = []
        calls: list[dict[str, Any]] = []
        while self._buf:
            if self._eat_space:
                self._rebase(self._buf.lstrip(), inside=self._inside)
                if not self._buf:
                    break
                self._eat_space = False
            if self._step(content, calls):
                continue
            if len(self._buf) <= MAX_HELD or not self._give_up(content):
                break
        return "".join(content), calls

    def flush(self) -> tuple[str, list[dict[str, Any]]]:
        """The end of the output: an unfinished call is tried once more, else it is content."""
        buf, inside = self._buf, self._inside
        self._rebase("", inside=False)
        if not inside:
            return ("" if self._eat_space and not buf.strip() else buf), []
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

    def _give_up(self, content: list[str]) -> bool:
        """The held text is past ``MAX_HELD``: no longer a possible call, it goes out as content
        (through the following steps), and so does the rest of the candidate. False if nothing
        held was a candidate (only a partial tag, which cannot grow that long)."""
        if self._inside:
            if self.format is ToolFormat.HERMES:
                content.append(_HERMES_OPEN)
                self._skip = True
            else:
                if self.format is ToolFormat.MISTRAL:
                    content.append(_MISTRAL_TAG)
                self._plain = True
        elif self.format is ToolFormat.JSON and not self._plain:
            self._plain = True  # space before a leading value that has yet to show
        else:
            return False
        self._rebase(self._buf, inside=False)
        return True

    def _end_of_json(self, start: int) -> int | None:
        """Where the held JSON value opening at ``start`` ends, scanning only new text."""
        if self._json is None:
            self._json = JsonEnd(start)
        before = self._json.pos
        end = self._json.end(self._buf)
        self._examined += self._json.pos - before
        return end

    # Each step consumes from the buffer and returns whether to keep going.

    def _plain_content(self, content: list[str]) -> bool:
        content.append(self._buf)
        self._rebase("", inside=False)
        return False

    def _tagged_content(self, tag: str, content: list[str], *, inside: bool = True) -> bool:
        """Content up to ``tag``, which opens a call (``inside``) or else ends a skipped block and
        is content itself; a partial tag at the end is held."""
        at = self._buf.find(tag)
        self._examined += len(self._buf)
        if at < 0:
            keep = partial_suffix(self._buf, tag)
            content.append(self._buf[: len(self._buf) - keep])
            self._rebase(self._buf[len(self._buf) - keep :], inside=False)
            return False
        content.append(self._buf[: at if inside else at + len(tag)])
        self._rebase(self._buf[at + len(tag) :], inside=inside)
        return True

    def _hermes(self, content: list[str], calls: list[dict[str, Any]]) -> bool:
        if self._skip:
            closed = self._tagged_content(_HERMES_CLOSE, content, inside=False)
            self._skip = not closed
            return closed
        if not self._inside:
            return self._tagged_content(_HERMES_OPEN, content)
        buf = self._buf
        at = buf.find(_HERMES_CLOSE, self._scan)
        if at < 0:
            self._examined += len(buf) - self._scan
            self._scan = max(self._scan, len(buf) - len(_HERMES_CLOSE) + 1)
            return False
        self._examined += at + len(_HERMES_CLOSE) - self._scan
        body = buf[:at]
        self._rebase(buf[at + len(_HERMES_CLOSE) :], inside=False)
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

    def _mistral_start(self) -> int | None:
        """Where the held call's JSON starts: after leading space, or after ``name[ARGS]`` and
        space. None while that is still streaming in; only new text is searched."""
        buf, i, n = self._buf, self._scan, len(self._buf)
        while i < n:
            if self._named:
                at = buf.find(_MISTRAL_ARGS, i)
                if at < 0:
                    self._examined += n - i
                    i = max(i, n - len(_MISTRAL_ARGS) + 1)
                    break
                self._examined += at + len(_MISTRAL_ARGS) - i
                i, self._named = at + len(_MISTRAL_ARGS), False
                self._tagged = True  # the JSON comes next, whatever it starts with
            elif buf[i].isspace():
                self._examined += 1
                i += 1
            elif self._tagged or buf[i] in "[{":
                self._scan = i
                return i
            else:
                self._named = True
        self._scan = i
        return None

    def _mistral(self, content: list[str], calls: list[dict[str, Any]]) -> bool:
        if self._plain:
            return self._plain_content(content)
        if not self._inside:
            return self._tagged_content(_MISTRAL_TAG, content)
        start = self._json.start if self._json is not None else self._mistral_start()
        if start is None:
            return False
        end = self._end_of_json(start)
        if end is None:
            return False
        buf = self._buf
        self._rebase(buf[end:], inside=False)
        parsed = self._mistral_calls(buf[:end])
        if parsed:
            calls.extend(self._calls(parsed))
        else:
            content.append(_MISTRAL_TAG + buf[:end])
        return True

    def _json_lead(self) -> int | None:
        """Where a leading JSON value would start, past space and an optional
        ``<|python_tag|>``; None while that is not yet known. Only new text is examined."""
        buf, i, n = self._buf, self._scan, len(self._buf)
        while i < n:
            if buf[i].isspace():
                i += 1
            elif not self._tagged and buf.startswith(_PYTHON_TAG, i):
                i += len(_PYTHON_TAG)
                self._tagged = True
            else:
                break
        self._examined += i - self._scan
        self._scan = i
        if i == n or (
            not self._tagged and n - i < len(_PYTHON_TAG) and _PYTHON_TAG.startswith(buf[i:])
        ):
            return None  # nothing but space and (part of) the tag yet
        return i

    def _json_step(self, content: list[str], calls: list[dict[str, Any]]) -> bool:
        if self._plain:
            return self._plain_content(content)
        if not self._inside:
            lead = self._json_lead()
            if lead is None:
                return False
            if self._buf[lead] not in "[{":
                self._plain = True
                return True
            self._rebase(self._buf[lead:], inside=True)
        end = self._end_of_json(0)
        if end is None:
            return False
        body = self._buf[:end]
        self._rebase(self._buf[end:], inside=False)
        parsed = parse_calls(body, self._names)
        if parsed:
            calls.extend(self._calls(parsed))
        else:
            content.append(body)
            self._plain = True
        return True
