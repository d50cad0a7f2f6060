"""The Modelfile parser: Ollama's character state machine, with line-numbered errors.

Commands are case-insensitive; values may be bare, ``"quoted"`` or triple-quoted heredocs that
span lines; ``#`` starts a comment line. :func:`modelfile_to_create_request` maps the parsed
commands onto the fields of a structured ``/api/create`` request.
"""

from __future__ import annotations

import logging
import re
from pathlib import PurePath
from typing import Any

import msgspec

from power.errors import InvalidRequestError

__all__ = [
    "Command",
    "Modelfile",
    "ModelfileError",
    "is_path_ref",
    "modelfile_to_create_request",
    "parse_modelfile",
    "parse_parameter",
]

log = logging.getLogger(__name__)

COMMANDS = (
    "from", "license", "template", "system", "adapter", "renderer", "parser", "parameter",
    "message", "requires",
)  # fmt: skip
MESSAGE_ROLES = ("system", "user", "assistant")

_ERR_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "renderer", '
    '"parser", "parameter", "message", or "requires"'
)
_ERR_ROLE = 'message role must be one of "system", "user", or "assistant"'

# PARAMETER name -> type, per Ollama's Options struct.
_INT, _FLOAT, _BOOL, _LIST = "int", "float", "bool", "list"
PARAMETER_TYPES: dict[str, str] = {
    "num_keep": _INT, "seed": _INT, "num_predict": _INT, "top_k": _INT, "top_p": _FLOAT,
    "min_p": _FLOAT, "typical_p": _FLOAT, "repeat_last_n": _INT, "temperature": _FLOAT,
    "repeat_penalty": _FLOAT, "presence_penalty": _FLOAT, "frequency_penalty": _FLOAT,
    "stop": _LIST, "num_ctx": _INT, "num_batch": _INT, "num_gpu": _INT, "main_gpu": _INT,
    "use_mmap": _BOOL, "num_thread": _INT, "numa": _BOOL, "embedding_only": _BOOL,
    "tfs_z": _FLOAT, "draft_num_predict": _INT,
}  # fmt: skip
DEPRECATED_PARAMETERS = frozenset(
    "penalize_newline low_vram f16_kv logits_all vocab_only use_mlock mirostat mirostat_tau "
    "mirostat_eta".split()
)
_TRUE = frozenset("1 t T TRUE true True".split())
_FALSE = frozenset("0 f F FALSE false False".split())
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_BLANKS = re.compile(r"[ \t\r\n]*")
_LETTERS = re.compile(r"[A-Za-z]*")
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_]*")
_LINE_BREAK = re.compile(r"[\r\n]")
_LINE_BREAKS = re.compile(r"[\r\n]+")
_INT_DIGITS = 19  # more significant digits than any option's range (int64) allows


class ModelfileError(InvalidRequestError):
    """A Modelfile that cannot be parsed; the message names the line: ``(line 3): ...``."""

    def __init__(self, message: str, *, line: int = 0) -> None:
        super().__init__(f"(line {line}): {message}" if line > 0 else message)
        self.line = line


class Command(msgspec.Struct, frozen=True):
    """One command; ``name`` is "model" for FROM, the parameter name for PARAMETER."""

    name: str
    args: str
    line: int = 0
    role: str = ""  # MESSAGE only


class Modelfile(msgspec.Struct, frozen=True):
    commands: list[Command]


def _unquote(s: str) -> str | None:
    if s.startswith('"""'):
        return s[3:-3] if len(s) >= 6 and s.endswith('"""') else None
    if s.startswith('"'):
        return s[1:-1] if len(s) >= 2 and s.endswith('"') else None
    return s


def _printable(piece: str) -> str:
    """``piece`` (no line breaks) without the characters a value drops: all but the printable
    ones and tabs."""
    if piece.isprintable() or piece.replace("\t", "").isprintable():
        return piece
    return "".join(c for c in piece if c == "\t" or c.isprintable())


class _Value:
    """A value as it is read, line by line. A line break ends it unless its stripped text opens
    a quote it does not close; that depends only on the first and last three characters of the
    stripped text, so they are kept as the value grows and each line costs its own length, not
    the value's (stripping the whole value at each line, or each space, was quadratic)."""

    __slots__ = ("end", "first", "head", "last", "pieces", "size", "tail")

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.size = 0
        self.first = self.last = -1  # where the stripped text starts and ends
        self.head = ""  # the (up to) three characters from `first` on
        self.tail = ""  # the (up to) three characters that end at `last`
        self.end = ""  # the last three characters so far

    def add(self, piece: str) -> None:
        body = piece.rstrip()
        if self.first >= 0:
            self.head += piece[: 3 - len(self.head)]
        elif body:
            lead = len(piece) - len(piece.lstrip())
            self.first = self.size + lead
            self.head = piece[lead : lead + 3]
        if body:
            self.last = self.size + len(body) - 1
            self.tail = (self.end + body)[-3:]
        self.end = (self.end + piece)[-3:]
        self.pieces.append(piece)
        self.size += len(piece)

    def unquoted(self) -> str | None:
        """The value, quotes removed; None while a quote it opens is not closed."""
        if self.first < 0:
            return ""
        n = self.last - self.first + 1
        if n >= 3 and self.head == '"""':
            closed = n >= 6 and self.tail == '"""'
        elif self.head.startswith('"'):
            closed = n >= 2 and self.tail.endswith('"')
        else:
            closed = True
        return _unquote("".join(self.pieces)[self.first : self.last + 1]) if closed else None


def parse_modelfile(text: str) -> Modelfile:
    """Parse Modelfile text; raises :class:`ModelfileError`.

    Ollama's character state machine, run a run of characters at a time: a command's word, its
    parameter name or message role, and each line of its value. Linear in the text's length.
    """
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    commands: list[Command] = []
    i, n, line = 0, len(text), 1
    while True:
        blanks = text[i : _end(_BLANKS, text, i)]
        line += blanks.count("\n") + blanks.count("\r")
        i += len(blanks)
        if i < n and text[i] == "#":  # a comment, up to its line break
            found = _LINE_BREAK.search(text, i)
            i = found.start() if found else n
            continue
        if i >= n:
            break
        # any other character starts a command word (one that is not printable is dropped)
        first = text[i] if text[i].isprintable() else ""
        word, i = _word(_LETTERS, text, i + 1, first, line)
        line, c = _after_word(text, i, line)
        if c not in " \t":
            raise ModelfileError(_ERR_COMMAND, line=line)
        word = word.lower()
        if word not in COMMANDS:
            raise ModelfileError(_ERR_COMMAND, line=line)
        name, role = ("model" if word == "from" else word), ""
        if word in ("parameter", "message"):
            pattern = _PARAMETER_NAME if word == "parameter" else _LETTERS
            arg, i = _word(pattern, text, i + 1, "", line)
            line, c = _after_word(text, i, line)
            if c not in " \t":
                raise ModelfileError(f"unexpected character {c!r}", line=line)
            if word == "message" and arg not in MESSAGE_ROLES:
                raise ModelfileError(_ERR_ROLE, line=line)
            name, role = (arg, "") if word == "parameter" else (name, arg)
        start = line
        value, i, line = _read_value(text, i + 1, line)
        if value is None:
            raise ModelfileError("unexpected EOF: unterminated quoted value", line=start)
        commands.append(Command(name, value, start, role))
    if not any(cmd.name == "model" for cmd in commands):
        raise ModelfileError("no FROM line")
    return Modelfile(commands)


def _word(pattern: re.Pattern[str], text: str, i: int, first: str, line: int) -> tuple[str, int]:
    """The word ``first`` begins at ``i``, and where it ends; the text ending there is an error."""
    end = _end(pattern, text, i)
    word = first + text[i:end]
    if end >= len(text):
        raise ModelfileError(f"unexpected EOF: {word}", line=line)
    return word, end


def _end(pattern: re.Pattern[str], text: str, i: int) -> int:
    """Where the run of ``pattern`` (which may match nothing) from ``i`` ends."""
    found = pattern.match(text, i)
    return found.end() if found else i


def _after_word(text: str, i: int, line: int) -> tuple[int, str]:
    """The line number once the character at ``i`` is read, and that character."""
    c = text[i]
    return (line + 1 if c in "\r\n" else line), c


def _read_value(text: str, i: int, line: int) -> tuple[str | None, int, int]:
    """The value from ``i`` (None: a quote left open at the end), where it ends, and the line
    number there. A line break it takes in is kept; the one that ends it is not."""
    value = _Value()
    while True:
        found = _LINE_BREAKS.search(text, i)
        end = found.start() if found else len(text)
        if end > i:
            value.add(_printable(text[i:end]))
        if found is None:
            return value.unquoted(), end, line
        done = value.unquoted()
        if done is not None:
            return done, end + 1, line + 1
        # (the breaks after this one leave the answer as it is: they join the value together)
        breaks = found.group()
        value.add(breaks)
        line += len(breaks)
        i = found.end()


def parse_parameter(name: str, value: str, *, line: int = 0) -> Any:
    """Convert a PARAMETER value to its option type; unknown names are an error."""
    kind = PARAMETER_TYPES.get(name)
    if kind is None:
        raise ModelfileError(f"unknown parameter '{name}'", line=line)
    if kind == _LIST:
        return [value]
    if kind == _INT and _INT_RE.match(value):
        # (int() of thousands of digits is slow, and past 4,300 a ValueError: a 500)
        digits = value.rstrip("\n").lstrip("+-").lstrip("0") or "0"
        if len(digits) > _INT_DIGITS:
            raise ModelfileError(
                f'parameter "{name}" is out of range: an integer of {len(digits)} digits', line=line
            )
        return -int(digits) if value.startswith("-") else int(digits)
    if kind == _FLOAT:
        try:
            return float(value)
        except ValueError:
            pass
    if kind == _BOOL and value in _TRUE | _FALSE:
        return value in _TRUE
    raise ModelfileError(f"invalid {kind} value [{value}]", line=line)


def _ref(arg: str) -> str:
    """A FROM/ADAPTER value as the request carries it: ``@sha256:…`` names a blob, by digest."""
    return arg[1:] if arg.startswith("@") else arg


def is_path_ref(ref: str) -> bool:
    """A FROM/ADAPTER value written as a file path, decided from its text alone."""
    return ref.startswith(("/", "./", "../", "~")) or ref in (".", "..") or "\\" in ref


def _file_key(ref: str) -> str:
    """The ``files`` key of a further FROM: the file's name, or the digest made one."""
    return ref.replace(":", "-", 1) if ref.startswith("sha256") else PurePath(ref).name or ref


def modelfile_to_create_request(parsed: Modelfile) -> dict[str, Any]:
    """Map commands onto structured create fields (``from``, ``adapters``, ``parameters``...).

    Pure text: FROM and ADAPTER values are kept as written (``@sha256:…`` loses its ``@``);
    nothing here looks at the disk. The CLI uploads the local files they name; the server
    accepts only model names and digests. The first FROM is ``from``; further ones (a projector
    beside the model's GGUF, as vision models have) are ``files``, keyed by file name.
    """
    req: dict[str, Any] = {}
    files: dict[str, str] = {}
    params: dict[str, Any] = {}
    messages: list[dict[str, str]] = []
    licenses: list[str] = []
    adapters: dict[str, str] = {}
    for cmd in parsed.commands:
        if cmd.name == "model":
            source = _ref(cmd.args)
            if "from" in req:
                files[_file_key(source)] = source
            else:
                req["from"] = source
        elif cmd.name == "adapter":
            source = _ref(cmd.args)
            key = source if cmd.args.startswith("@") else PurePath(source).name or source
            adapters[key] = source
        elif cmd.name in ("template", "system", "renderer", "parser", "requires"):
            req[cmd.name] = cmd.args
        elif cmd.name == "license":
            licenses.append(cmd.args)
        elif cmd.name == "message":
            messages.append({"role": cmd.role, "content": cmd.args})
        elif cmd.name in DEPRECATED_PARAMETERS:
            log.warning("parameter %s is deprecated; ignored", cmd.name)
        else:
            value = parse_parameter(cmd.name, cmd.args, line=cmd.line)
            if isinstance(value, list):
                params.setdefault(cmd.name, []).extend(value)
            else:
                params[cmd.name] = value
    if files:
        req["files"] = files
    if adapters:
        req["adapters"] = adapters
    if params:
        req["parameters"] = params
    if messages:
        req["messages"] = messages
    if licenses:
        req["license"] = licenses
    return req
