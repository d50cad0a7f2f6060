"""From sampled tokens to text chunks: UTF-8 completion and stop strings.

Token pieces are bytes and a multi-byte character may span tokens, so bytes go through an
incremental decoder. Text that could be the start of a stop string is held back until it is
known not to be; when a stop string appears, the text before it is released and the rest
(the stop string included) is dropped. A generation that ends inside a character (at
``num_predict`` or the context's end) drops that character's bytes, rather than showing them as
U+FFFD; invalid bytes inside the text still are.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

__all__ = ["TextAssembler"]


class TextAssembler:
    def __init__(self, stop: Sequence[str]) -> None:
        self._stops = [s for s in stop if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._held = ""
        self.matched = ""  # the stop string that ended it

    @property
    def stopped(self) -> bool:
        return bool(self.matched)  # (stop strings are never empty)

    def feed(self, piece: bytes) -> str:
        """Add one token's bytes; return the text that is now safe to emit."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(piece)
        if not self._stops:
            self._held = ""
            return text
        cut, self.matched = self._find_stop(text)
        if cut >= 0:
            self._held = ""
            return text[:cut]
        keep = self._partial_suffix(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """Release what is held at the end of generation (no stop string completed); the
        bytes of a character cut short are dropped."""
        if self.stopped:
            return ""
        self._decoder.reset()  # it holds only the start of a possible character
        text, self._held = self._held, ""
        return text

    def _find_stop(self, text: str) -> tuple[int, str]:
        """Where the first stop string in ``text`` begins (-1: none), and which it is (of two
        at the same place, the first listed)."""
        found, which = -1, ""
        for stop in self._stops:
            i = text.find(stop)
            if i >= 0 and (found < 0 or i < found):
                found, which = i, stop
        return found, which

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
