"""Refuse chat templates that minijinja cannot compile within a bounded stack.

minijinja's parser guards nested brackets and blocks (150 levels), but not chains such as
`- - - 1`, `not not x`, `a.b.c…`, `1+1+…` or `x|f|f…`: each link is one more level of
recursion in the parser, the code generator or the tree's destructor, and a long enough
chain overflows the native stack, which kills the process (Python cannot catch it).

So before compiling, `check_source` bounds the template's size and, tag by tag, the tokens
that can add a level (operators, `.`, `[`, `(`, `|`, and the keywords below). The scan
follows minijinja's lexer (default delimiters: comments, raw blocks, string literals with
escapes, the bracket balance that decides where a tag ends), so a chain cannot hide from it.
An expression lies within one tag, so its depth is at most the tag's count plus minijinja's
own 150 guarded levels. Where this lexer and minijinja's could still differ (characters
minijinja rejects), this one keeps counting, which only over-counts.
"""

from __future__ import annotations

import re

from power.template._error import TemplateError

__all__ = ["MAX_SOURCE", "MAX_TAG_LINKS", "check_source"]

# Real chat templates are at most tens of KB; the largest tags hold a few dozen operators.
MAX_SOURCE = 256 * 1024  # characters
MAX_TAG_LINKS = 1000  # operators, `.`, `[`, `(`, `|` and keywords in one {{ }} or {% %}

_START = re.compile(r"\{[{%#]")
_RAW = re.compile(r"[-+]?[ \t\n\r\f]*raw[ \t\n\r\f]*[-+]?%\}")
_END_RAW = re.compile(r"\{%[-+]?[ \t\n\r\f]*endraw[ \t\n\r\f]*[-+]?%\}")
_SPACE = re.compile(r"[ \t\n\r\f]*")
_STRING = {
    "'": re.compile(r"'(?:[^'\\]|\\.)*'", re.DOTALL),
    '"': re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL),
}
_DIGITS = re.compile(r"[0-9]*")
_RADIX = {"0b": 2, "0B": 2, "0o": 8, "0O": 8, "0x": 16, "0X": 16}
_WORD = re.compile(r"[A-Za-z0-9_\x80-\U0010ffff]+")
_TWO_CHAR_OPS = frozenset({"//", "**", "==", "!=", ">=", "<="})
_LINK_CHARS = frozenset("+-*/%.~|><([{")
_OPEN, _CLOSE = frozenset("([{"), frozenset(")]}")
_LINK_WORDS = frozenset({"not", "and", "or", "if", "else", "is", "in"})


def check_source(source: str) -> None:
    """Raise TemplateError for a template too large or with a tag too long to compile safely."""
    if len(source) > MAX_SOURCE:
        raise TemplateError(f"chat template is longer than {MAX_SOURCE} characters")
    _Scan(source).run()


class _Scan:
    def __init__(self, source: str) -> None:
        self.src = source
        self.pos = 0
        self.balance = 0  # minijinja's paren_balance: kept across tags, as there

    def run(self) -> None:
        src = self.src
        while (found := _START.search(src, self.pos)) is not None:
            kind = src[found.start() + 1]
            self.pos = found.end()
            if kind == "#":
                end = src.find("#}", self.pos)
                if end < 0:
                    return  # minijinja stops at the unterminated comment
                self.pos = end + 2
            elif kind == "%" and (raw := _RAW.match(src, self.pos)) is not None:
                end_raw = _END_RAW.search(src, raw.end())
                if end_raw is None:
                    return
                self.pos = end_raw.end()
            elif not self.tag("}}" if kind == "{" else "%}", found.start()):
                return

    def tag(self, end: str, start: int) -> bool:
        """Scan one tag's tokens up to its end; False where minijinja's lexer gives up."""
        src = self.src
        if src[self.pos : self.pos + 1] in ("-", "+"):
            self.pos += 1
        links = 0
        while True:
            self.pos = _skip(_SPACE, src, self.pos)
            if self.pos >= len(src):
                return False
            if self.balance == 0 and (at := self.tag_end(end)):
                self.pos += at
                return True
            ch = src[self.pos]
            if src[self.pos : self.pos + 2] in _TWO_CHAR_OPS:
                self.pos += 2
                links += 1
            elif ch in _STRING:
                string = _STRING[ch].match(src, self.pos)
                if string is None:
                    return False  # unterminated string: minijinja stops here
                self.pos = string.end()
            elif "0" <= ch <= "9":
                self.number()
            elif (word := _WORD.match(src, self.pos)) is not None:
                self.pos = word.end()
                links += word.group() in _LINK_WORDS
            else:
                self.pos += 1
                links += ch in _LINK_CHARS
                self.balance += (ch in _OPEN) - (ch in _CLOSE)
            if links > MAX_TAG_LINKS:
                line = src.count("\n", 0, start) + 1
                raise TemplateError(
                    f"chat template too complex: a tag at line {line} chains more than "
                    f"{MAX_TAG_LINKS} operators"
                )

    def tag_end(self, end: str) -> int:
        """The length of the tag's end (`}}`, `-}}`, `+}}`…) if it starts here, else 0."""
        src, pos = self.src, self.pos
        if src.startswith(end, pos):
            return len(end)
        if src[pos] in "-+" and src.startswith(end, pos + 1):
            return len(end) + 1
        return 0

    def number(self) -> None:
        """Skip a number literal exactly as far as minijinja's `eat_number` does.

        Where a number stops decides where the next token starts (`0b1and` is `0b1 and`).
        """
        src = self.src
        radix = _RADIX.get(src[self.pos : self.pos + 2], 10)
        state = "int" if radix == 10 else "radix"
        i = _skip(_DIGITS, src, self.pos + (0 if radix == 10 else 2))
        while i < len(src):
            c = src[i]
            if c == "." and state == "int":
                exponent = src[i + 1 : i + 2] in ("e", "E") and _is_sign_or_digit(src, i + 2)
                if not exponent and _starts_identifier(src, i + 1):
                    break
                state = "fraction"
            elif c in "eE" and state in ("int", "fraction"):
                state = "exponent"
            elif c in "+-" and state == "exponent":
                state = "signed"
            elif "0" <= c <= "9":
                state = "signed" if state == "exponent" else state
            elif not ((c in "abcdefABCDEF" and radix == 16) or c == "_"):
                break
            i += 1
        self.pos = i


def _skip(pattern: re.Pattern[str], src: str, pos: int) -> int:
    match = pattern.match(src, pos)
    return pos if match is None else match.end()


def _is_sign_or_digit(src: str, i: int) -> bool:
    c = src[i : i + 1]
    return c != "" and c in "+-0123456789"


def _starts_identifier(src: str, i: int) -> bool:
    # minijinja: `_` or a Unicode XID_Start character; every non-ASCII character is taken as
    # one, which can only end a number earlier, so a `.` is counted rather than skipped.
    c = src[i : i + 1]
    return c != "" and (c == "_" or c.isalpha() or not c.isascii())
