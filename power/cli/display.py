"""How a streamed reply reaches the terminal: word wrap, and thinking dimmed between markers.

Mirrors Ollama's ``displayResponse`` and thinking markers (``cmd/cmd.go``): thinking is printed
grey between a bold "Thinking..." and "...done thinking."; on a stream that is not a terminal the
markers are plain text and nothing else is escaped. Word wrap breaks lines before the word that
would cross the right margin, five columns short of the terminal's width as Ollama does.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

__all__ = ["GREY", "RESET", "ReplyPrinter", "WordWrapper"]

GREY = "\x1b[38;5;245m"
BOLD = "\x1b[1m"
RESET = "\x1b[0m"
_MARGIN = 5  # Ollama wraps once a line would pass termWidth - 5
_MIN_WIDTH = 10


def _width(ch: str) -> int:
    return 2 if unicodedata.east_asian_width(ch) in {"W", "F"} else 1


class WordWrapper:
    """Break streamed text at word boundaries so that no line passes ``columns - 5``.

    A word is held back until a space or newline ends it, then written on the current line or,
    when it would not fit, on a new one; a word longer than a whole line is cut where the line
    ends. Wide (CJK) characters count two columns and break anywhere, as in Ollama.
    """

    def __init__(self, columns: int) -> None:
        self.width = max(columns - _MARGIN, _MIN_WIDTH)
        self.col = 0
        self.word = ""
        self.word_width = 0

    def feed(self, text: str) -> str:
        out: list[str] = []
        for ch in text:
            if ch in " \t":
                out.append(self.flush(room=1))  # Ollama wraps a word whose space won't fit
                out.append(ch)
                self.col += 1
            elif ch in "\n\r":
                out.append(self.flush())
                out.append(ch)
                self.col = 0
            elif _width(ch) == 2:
                out.append(self.flush())
                if self.col + 2 > self.width:
                    out.append("\n")
                    self.col = 0
                out.append(ch)
                self.col += 2
            else:
                self.word += ch
                self.word_width += 1
                if self.word_width >= self.width:  # longer than a line: cut it here
                    out.append(self.flush())
        return "".join(out)

    def flush(self, room: int = 0) -> str:
        """The word held back, placed on this line or, with ``room`` columns after it, the next."""
        word, width = self.word, self.word_width
        self.word, self.word_width = "", 0
        if self.col > 0 and self.col + width + room > self.width:
            self.col = width
            return "\n" + word
        self.col += width
        return word


class ReplyPrinter:
    """Writes one reply's thinking and content as they stream, as Ollama's ``chat`` does."""

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        columns: int | None,
        color: bool,
        hide_thinking: bool,
    ) -> None:
        self._write = write
        self._columns = columns
        self._wrap = WordWrapper(columns) if columns else None
        self._color = color
        self._hide_thinking = hide_thinking
        self._thinking_open = False
        self._last = ""

    @property
    def hides(self) -> bool:
        """True when thinking is not shown (so it should not end a spinner either)."""
        return self._hide_thinking

    def _out(self, text: str) -> None:
        text = self._wrap.feed(text) if self._wrap else text
        if text:
            self._write(text)
            self._last = text[-1]

    def _end_word(self) -> None:
        if self._wrap and (tail := self._wrap.flush()):
            self._write(tail)
            self._last = tail[-1]

    def thinking(self, text: str) -> None:
        if self._hide_thinking or not text:
            return
        if not self._thinking_open:
            opening = "Thinking...\n"
            self._write(f"{GREY}{BOLD}{opening}{RESET}{GREY}" if self._color else opening)
            self._last = "\n"
            self._thinking_open = True
        self._out(text)

    def content(self, text: str) -> None:
        if not text:
            return
        if self._thinking_open:
            self._close_thinking()
        self._out(text)

    def _close_thinking(self) -> None:
        self._end_word()
        if self._last != "\n":
            self._write("\n")
        closing = "...done thinking.\n\n"
        self._write(f"{GREY}{BOLD}{closing}{RESET}" if self._color else closing)
        self._thinking_open = False
        self._last = "\n"
        self._wrap = WordWrapper(self._columns) if self._columns else None

    def finish(self, *, interrupted: bool = False) -> None:
        """Flush the word held back (unless stopped: then it was never seen, and goes) and
        leave the terminal's colours as they were."""
        if not interrupted:
            self._end_word()
        if self._thinking_open and self._color:
            self._write(RESET)
        self._thinking_open = False
