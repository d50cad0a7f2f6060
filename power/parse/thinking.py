"""Splitting streamed model output into thinking and content at ``<think>…</think>``-style tags.

The state machine of Ollama's generic thinking parser: whitespace before the opening tag is
skipped; output that does not start with the opening tag is all content; inside the thinking
block, a suffix that may be the start of the closing tag is held back until the next chunk
decides it; after the closing tag, leading whitespace of the content is eaten. Only what is
still ambiguous is ever buffered.
"""

from __future__ import annotations

import enum

__all__ = ["ThinkingParser"]


class _State(enum.Enum):
    LOOKING = enum.auto()  # before the opening tag (or before deciding there is none)
    AFTER_OPEN = enum.auto()  # eating whitespace after the opening tag
    THINKING = enum.auto()  # inside the block
    AFTER_CLOSE = enum.auto()  # eating whitespace after the closing tag
    CONTENT = enum.auto()  # everything else is content


def partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class ThinkingParser:
    """Feed text as it streams; get back ``(thinking, content)`` that is now certain.

    ``primed`` is for prompts that already end with the opening tag: the output starts inside
    the thinking block.
    """

    def __init__(self, opening: str, closing: str, *, primed: bool = False) -> None:
        if not opening or not closing:
            raise ValueError("thinking tags must not be empty")
        self.opening = opening
        self.closing = closing
        self._state = _State.AFTER_OPEN if primed else _State.LOOKING
        self._buf = ""

    def feed(self, text: str) -> tuple[str, str]:
        self._buf += text
        thinking: list[str] = []
        content: list[str] = []
        while self._buf:
            state = self._state
            if state is _State.LOOKING:
                stripped = self._buf.lstrip()
                if stripped.startswith(self.opening):
                    self._buf = stripped[len(self.opening) :]
                    self._state = _State.AFTER_OPEN
                    continue
                if not stripped or self.opening.startswith(stripped):
                    break  # only whitespace or part of the tag so far: wait
                self._state = _State.CONTENT
            elif state is _State.AFTER_OPEN:
                self._buf = self._buf.lstrip()
                if self._buf:
                    self._state = _State.THINKING
            elif state is _State.THINKING:
                before, found, after = self._buf.partition(self.closing)
                if found:
                    thinking.append(before)
                    self._buf = after
                    self._state = _State.AFTER_CLOSE
                    continue
                keep = partial_suffix(self._buf, self.closing)
                thinking.append(self._buf[: len(self._buf) - keep])
                self._buf = self._buf[len(self._buf) - keep :]
                break
            elif state is _State.AFTER_CLOSE:
                self._buf = self._buf.lstrip()
                if self._buf:
                    self._state = _State.CONTENT
            else:
                content.append(self._buf)
                self._buf = ""
        return "".join(thinking), "".join(content)

    def flush(self) -> tuple[str, str]:
        """The end of the output: whatever is still held back is resolved."""
        buf, self._buf = self._buf, ""
        if self._state is _State.THINKING:
            return buf, ""  # an unclosed block (or a partial closing tag) is still thinking
        if self._state is _State.LOOKING:
            return "", buf if buf.strip() else ""
        if self._state in (_State.AFTER_OPEN, _State.AFTER_CLOSE):
            return "", ""
        return "", buf
