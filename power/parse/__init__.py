"""Parsing model output as it streams: thinking blocks first, then tool calls in the content.

``OutputParser`` chains a ``ThinkingParser`` and a ``ToolParser`` (either may be absent) and
hands back ``Parsed`` pieces: only text that can no longer change meaning is released.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from power.parse.thinking import ThinkingParser
from power.parse.tools import ToolFormat, ToolParser, new_call_id, tool_format

__all__ = [
    "OutputParser",
    "Parsed",
    "ThinkingParser",
    "ToolFormat",
    "ToolParser",
    "new_call_id",
    "tool_format",
]


@dataclass(slots=True)
class Parsed:
    thinking: str = ""
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.thinking or self.content or self.tool_calls)


class OutputParser:
    def __init__(
        self, *, thinking: ThinkingParser | None = None, tools: ToolParser | None = None
    ) -> None:
        self.thinking = thinking
        self.tools = tools

    @property
    def passthrough(self) -> bool:
        return self.thinking is None and self.tools is None

    def feed(self, text: str) -> Parsed:
        thinking, content = self.thinking.feed(text) if self.thinking else ("", text)
        calls: list[dict[str, Any]] = []
        if self.tools is not None and content:
            content, calls = self.tools.feed(content)
        return Parsed(thinking, content, calls)

    def flush(self) -> Parsed:
        thinking, content = self.thinking.flush() if self.thinking else ("", "")
        calls: list[dict[str, Any]] = []
        if self.tools is not None:
            content, calls = self.tools.feed(content)
            tail, more = self.tools.flush()
            content += tail
            calls += more
        return Parsed(thinking, content, calls)
