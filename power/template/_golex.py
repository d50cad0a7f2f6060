"""Lexer for Go's text/template syntax (default `{{ }}` delimiters).

Follows the behaviour of Go's `text/template/parse` lexer: trim markers are `{{- ` and ` -}}`
(the minus must be separated from the action by ASCII whitespace), comments are `{{/* */}}`
and must touch both delimiters (after an optional trim marker), and text that trimming leaves
empty produces no token.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from power.template._error import TemplateError

__all__ = ["Kind", "Token", "lex"]

_SPACE = " \t\r\n"
_KEYWORDS = frozenset(
    {"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"}
)


class Kind(enum.Enum):
    TEXT = enum.auto()
    LEFT = enum.auto()
    RIGHT = enum.auto()
    SPACE = enum.auto()
    IDENT = enum.auto()
    KEYWORD = enum.auto()
    FIELD = enum.auto()
    VARIABLE = enum.auto()
    DOT = enum.auto()
    STRING = enum.auto()
    RAW_STRING = enum.auto()
    CHAR_CONST = enum.auto()
    NUMBER = enum.auto()
    BOOL = enum.auto()
    NIL = enum.auto()
    LPAREN = enum.auto()
    RPAREN = enum.auto()
    PIPE = enum.auto()
    DECLARE = enum.auto()
    ASSIGN = enum.auto()
    CHAR = enum.auto()
    EOF = enum.auto()


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    val: str
    line: int


def _is_alnum(ch: str) -> bool:
    return ch == "_" or ch.isalnum()


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.tokens: list[Token] = []
        self.paren_depth = 0
        self._counted = (0, 1)  # (position, line number at that position)

    def line(self, pos: int | None = None) -> int:
        pos = self.pos if pos is None else pos
        start, line = self._counted
        if pos < start:
            start, line = 0, 1
        line += self.text.count("\n", start, pos)
        self._counted = (pos, line)
        return line

    def error(self, msg: str) -> TemplateError:
        return TemplateError(f"{self.line()}: {msg}")

    def emit(self, kind: Kind, val: str, start: int) -> None:
        self.tokens.append(Token(kind, val, self.line(start)))

    def right_delim_at(self, pos: int) -> tuple[bool, bool]:
        """Whether a closing delimiter starts at pos, and whether it carries a trim marker."""
        text = self.text
        if pos + 1 < len(text) and text[pos] in _SPACE and text[pos + 1] == "-":
            if text.startswith("}}", pos + 2):
                return True, True
        return text.startswith("}}", pos), False

    def close_action(self, trim: bool) -> None:
        self.pos += 4 if trim else 2
        if trim:
            while self.pos < len(self.text) and self.text[self.pos] in _SPACE:
                self.pos += 1

    def run(self) -> list[Token]:
        text = self.text
        while True:
            x = text.find("{{", self.pos)
            if x < 0:
                if self.pos < len(text):
                    self.emit(Kind.TEXT, text[self.pos :], self.pos)
                break
            trim = text[x + 2 : x + 3] == "-" and text[x + 3 : x + 4] in tuple(_SPACE)
            segment = text[self.pos : x]
            if trim:
                segment = segment.rstrip(_SPACE)
            if segment:
                self.emit(Kind.TEXT, segment, self.pos)
            self.pos = x + (4 if trim else 2)
            if text.startswith("/*", self.pos):
                self.comment()
                continue
            self.emit(Kind.LEFT, "{{", x)
            self.inside_action()
        self.emit(Kind.EOF, "", len(text))
        return self.tokens

    def comment(self) -> None:
        end = self.text.find("*/", self.pos + 2)
        if end < 0:
            raise self.error("unclosed comment")
        self.pos = end + 2
        delim, trim = self.right_delim_at(self.pos)
        if not delim:
            raise self.error("comment ends before closing delimiter")
        self.close_action(trim)

    def inside_action(self) -> None:
        text = self.text
        while True:
            delim, trim = self.right_delim_at(self.pos)
            if delim:
                if self.paren_depth:
                    raise self.error("unclosed left paren")
                self.emit(Kind.RIGHT, "}}", self.pos)
                self.close_action(trim)
                return
            if self.pos >= len(text):
                raise self.error("unclosed action")
            start, ch = self.pos, text[self.pos]
            if ch in _SPACE:
                self.space()
            elif ch == "=":
                self.pos += 1
                self.emit(Kind.ASSIGN, "=", start)
            elif ch == ":":
                if not text.startswith(":=", start):
                    raise self.error("expected :=")
                self.pos += 2
                self.emit(Kind.DECLARE, ":=", start)
            elif ch == "|":
                self.pos += 1
                self.emit(Kind.PIPE, "|", start)
            elif ch == '"':
                self.quoted('"', Kind.STRING, "unterminated quoted string")
            elif ch == "`":
                end = text.find("`", start + 1)
                if end < 0:
                    raise self.error("unterminated raw quoted string")
                self.pos = end + 1
                self.emit(Kind.RAW_STRING, text[start : self.pos], start)
            elif ch == "'":
                self.quoted("'", Kind.CHAR_CONST, "unterminated character constant")
            elif ch == "$":
                self.field_or_variable(Kind.VARIABLE)
            elif ch == ".":
                if start + 1 < len(text) and text[start + 1].isdigit():
                    self.number()
                else:
                    self.field_or_variable(Kind.FIELD)
            elif ch in "+-" or ch.isdigit():
                self.number()
            elif _is_alnum(ch):
                self.identifier()
            elif ch == "(":
                self.pos += 1
                self.paren_depth += 1
                self.emit(Kind.LPAREN, "(", start)
            elif ch == ")":
                self.pos += 1
                self.paren_depth -= 1
                if self.paren_depth < 0:
                    raise self.error("unexpected right paren")
                self.emit(Kind.RPAREN, ")", start)
            elif ch.isascii() and ch.isprintable():
                self.pos += 1
                self.emit(Kind.CHAR, ch, start)
            else:
                raise self.error(f"unrecognized character in action: {ch!r}")

    def space(self) -> None:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _SPACE:
            self.pos += 1
        # A space followed by "-}}" belongs to the trim marker of the closing delimiter.
        delim, trim = self.right_delim_at(self.pos - 1)
        if delim and trim:
            self.pos -= 1
            if self.pos == start:
                return
        self.emit(Kind.SPACE, self.text[start : self.pos], start)

    def at_terminator(self) -> bool:
        if self.pos >= len(self.text):
            return True
        ch = self.text[self.pos]
        if ch in _SPACE or ch in ".,|:()":
            return True
        return self.text.startswith("}}", self.pos)

    def quoted(self, quote: str, kind: Kind, unterminated: str) -> None:
        start, text = self.pos, self.text
        i = start + 1
        while True:
            if i >= len(text) or text[i] == "\n":
                raise self.error(unterminated)
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == quote:
                break
            i += 1
        self.pos = i + 1
        self.emit(kind, text[start : self.pos], start)

    def field_or_variable(self, kind: Kind) -> None:
        start = self.pos
        self.pos += 1
        if self.at_terminator():
            self.emit(Kind.VARIABLE if kind is Kind.VARIABLE else Kind.DOT, self.text[start], start)
            return
        while self.pos < len(self.text) and _is_alnum(self.text[self.pos]):
            self.pos += 1
        if not self.at_terminator():
            raise self.error(f"bad character {self.text[self.pos]!r}")
        self.emit(kind, self.text[start : self.pos], start)

    def identifier(self) -> None:
        start = self.pos
        while self.pos < len(self.text) and _is_alnum(self.text[self.pos]):
            self.pos += 1
        word = self.text[start : self.pos]
        if not self.at_terminator():
            raise self.error(f"bad character {self.text[self.pos]!r}")
        if word in _KEYWORDS:
            self.emit(Kind.KEYWORD, word, start)
        elif word in ("true", "false"):
            self.emit(Kind.BOOL, word, start)
        elif word == "nil":
            self.emit(Kind.NIL, word, start)
        else:
            self.emit(Kind.IDENT, word, start)

    def number(self) -> None:
        start, text = self.pos, self.text
        i = start
        if text[i] in "+-":
            i += 1
        while i < len(text) and (_is_alnum(text[i]) or text[i] == "."):
            # Exponent signs: 1e-3, 0x1p+2.
            if text[i] in "eEpP" and i + 1 < len(text) and text[i + 1] in "+-":
                i += 1
            i += 1
        self.pos = i
        if start + 1 == i and text[start] in "+-":
            raise self.error(f"bad number syntax: {text[start:i]!r}")
        self.emit(Kind.NUMBER, text[start:i], start)


def lex(text: str) -> list[Token]:
    """Split a template into tokens; raises TemplateError on lexical errors."""
    return _Lexer(text).run()
