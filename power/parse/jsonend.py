"""Where a JSON object or array in a text ends, without parsing it: for tool calls held back
while a model streams them (``power.parse.tools``), whose text grows a chunk at a time.
"""

from __future__ import annotations

import re

__all__ = ["JsonEnd", "json_end"]

_OUTSIDE_MARK = re.compile(r'["\[\]{}]')  # what matters outside a string
_STRING_MARK = re.compile(r'["\\]')  # and inside one


class JsonEnd:
    """Where the JSON object/array opening at ``start`` ends, scanned incrementally: each call
    resumes where the last stopped, so text that grows by appending is read once in all."""

    __slots__ = ("depth", "escaped", "in_string", "pos", "start")

    def __init__(self, start: int = 0) -> None:
        self.start = self.pos = start
        self.depth = 0
        self.in_string = self.escaped = False

    def end(self, text: str) -> int | None:
        """The index just past the value, once complete. ``text`` extends earlier calls' text."""
        if self.start >= len(text) or text[self.start] not in "[{":
            return None
        i, n = self.pos, len(text)
        while i < n:
            if self.escaped:
                self.escaped = False
                i += 1
                continue
            mark = (_STRING_MARK if self.in_string else _OUTSIDE_MARK).search(text, i)
            if mark is None:
                i = n
                break
            i = mark.end()
            ch = mark.group()
            if self.in_string:
                if ch == "\\":
                    self.escaped = True
                else:
                    self.in_string = False
            elif ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 0:
                    self.pos = i
                    return i
        self.pos = i
        return None


def json_end(text: str, start: int = 0) -> int | None:
    """The index just past the JSON object/array opening at ``text[start]``, if complete."""
    return JsonEnd(start).end(text)
