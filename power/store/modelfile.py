"""The Modelfile parser: Ollama's character state machine, with line-numbered errors.

Commands are case-insensitive; values may be bare, ``"quoted"`` or triple-quoted heredocs that
span lines; ``#`` starts a comment line. :func:`modelfile_to_create_request` maps the parsed
commands onto the fields of a structured ``/api/create`` request.
"""

from __future__ import annotations

import enum
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


class _State(enum.Enum):
    NIL = enum.auto()
    NAME = enum.auto()
    VALUE = enum.auto()
    PARAMETER = enum.auto()
    MESSAGE = enum.auto()
    COMMENT = enum.auto()


def _is_alpha(c: str) -> bool:
    return c.isascii() and c.isalpha()


def _unquote(s: str) -> str | None:
    if s.startswith('"""'):
        return s[3:-3] if len(s) >= 6 and s.endswith('"""') else None
    if s.startswith('"'):
        return s[1:-1] if len(s) >= 2 and s.endswith('"') else None
    return s


def _next_state(c: str, state: _State, line: int) -> tuple[_State, bool]:
    """The state after reading ``c`` and whether ``c`` belongs to the buffer."""
    space, newline = c in " \t", c in "\r\n"
    if state is _State.NIL:
        if c == "#":
            return _State.COMMENT, False
        return (_State.NIL, False) if space or newline else (_State.NAME, True)
    if state is _State.NAME:
        if _is_alpha(c):
            return _State.NAME, True
        if space:
            return _State.VALUE, False
        raise ModelfileError(_ERR_COMMAND, line=line)
    if state is _State.VALUE:
        return (_State.NIL, True) if space or newline else (_State.VALUE, True)
    if state in (_State.PARAMETER, _State.MESSAGE):
        ok = _is_alpha(c) or (state is _State.PARAMETER and (c.isdigit() or c == "_"))
        if ok and c.isascii():
            return state, True
        if space:
            return _State.VALUE, False
        raise ModelfileError(f"unexpected character {c!r}", line=line)
    return (_State.NIL, False) if newline else (_State.COMMENT, False)


def parse_modelfile(text: str) -> Modelfile:
    """Parse Modelfile text; raises :class:`ModelfileError`."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    commands: list[Command] = []
    state, line, buf = _State.NIL, 1, ""
    name = role = ""
    start = line  # where the current command's value began
    for c in text:
        if c in "\r\n":
            line += 1
        nxt, keep = _next_state(c, state, line)
        if nxt is not state:
            if state is _State.NAME:
                word = buf.lower()
                if word not in COMMANDS:
                    raise ModelfileError(_ERR_COMMAND, line=line)
                name = "model" if word == "from" else word
                if word == "parameter":
                    nxt = _State.PARAMETER
                elif word == "message":
                    nxt = _State.MESSAGE
            elif state is _State.PARAMETER:
                name = buf
            elif state is _State.MESSAGE:
                if buf not in MESSAGE_ROLES:
                    raise ModelfileError(_ERR_ROLE, line=line)
                role = buf
            elif state is _State.VALUE:
                value = _unquote(buf.strip())
                if value is None or c in " \t":
                    buf += c
                    continue
                commands.append(Command(name, value, start, role))
                role = ""
            buf = ""
            state = nxt
            start = line
        if keep and c.isprintable():
            buf += c
    if state is _State.VALUE:
        value = _unquote(buf.strip())
        if value is None:
            raise ModelfileError("unexpected EOF: unterminated quoted value", line=start)
        commands.append(Command(name, value, start, role))
    elif state not in (_State.NIL, _State.COMMENT):
        raise ModelfileError(f"unexpected EOF: {buf}", line=line)
    if not any(cmd.name == "model" for cmd in commands):
        raise ModelfileError("no FROM line")
    return Modelfile(commands)


def parse_parameter(name: str, value: str, *, line: int = 0) -> Any:
    """Convert a PARAMETER value to its option type; unknown names are an error."""
    kind = PARAMETER_TYPES.get(name)
    if kind is None:
        raise ModelfileError(f"unknown parameter '{name}'", line=line)
    if kind == _LIST:
        return [value]
    if kind == _INT and _INT_RE.match(value):
        return int(value)
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
