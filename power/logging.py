"""Logging setup (configured once, with dictConfig) and redaction of secrets in log text.

Levels follow `OLLAMA_DEBUG` (`Settings.debug`): 0 INFO, 1 DEBUG, 2+ TRACE (5, below DEBUG);
Ollama's negative levels map to WARNING (-1) and ERROR (-2 and below). These apply to the
`power` loggers; other libraries' loggers stay at INFO unless debug >= 2 (then DEBUG).

Runner stderr is re-logged line by line under `power.runner` (`RUNNER_LOGGER`), whose filter
passes each line through `redact` first. Each HTTP request ends with one access-log line under
`power.access` (`AccessLog`). `log_format = "json"` writes every record as one JSON object per
line (time, level, logger, message, and an access line's fields), for journald or Loki.

Much of what is logged comes from clients (a request's decoded path, a model name), so both
formats keep control characters out of the output (`escape_controls`): a ``%0a`` in a URL
cannot start a forged line of its own, nor a ``%1b`` reach a terminal as an escape sequence.

Logs go to stderr (a terminal, journald), or with `log_file` (the daemon `power run` starts
in the background) to a file rotated by size (`RotatingLog`) that also receives fds 1 and 2.
"""

from __future__ import annotations

import json
import logging
import logging.config
import logging.handlers
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from power.observe import RequestInfo

__all__ = [
    "ACCESS_LOGGER",
    "RUNNER_LOGGER",
    "TRACE",
    "AccessLog",
    "JsonFormatter",
    "RedactFilter",
    "RotatingLog",
    "TextFormatter",
    "configure_logging",
    "escape_controls",
    "level_for",
    "redact",
]

TRACE = 5
RUNNER_LOGGER = "power.runner"
ACCESS_LOGGER = "power.access"
MASK = "***"

_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s: %(message)s"
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
_MAPPED = "::ffff:"  # an IPv4-mapped IPv6 address's prefix

# Each pattern keeps group 1 (the label) and masks the rest of the match.
_REDACTIONS: tuple[re.Pattern[str], ...] = (
    # Authorization: Bearer abc / "authorization": "Basic abc" (scheme kept, credentials masked)
    re.compile(
        r"""(\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?(?:(?:bearer|basic|digest|token)\s+)?)"""
        r"""[^\s"',;]+""",
        re.IGNORECASE,
    ),
    # a bare "Bearer abc" anywhere else
    re.compile(r"(\bbearer\s+)(?!\*\*\*)[A-Za-z0-9._~+/=-]+", re.IGNORECASE),
    # password=..., api_key: ..., "client_secret": "...", HF_TOKEN=..., X-Api-Key: ...
    # `token` only directly before the separator, so llama.cpp's "BOS token = 1" stays readable.
    re.compile(
        r"""(\b[\w-]*?(?:passw(?:or)?d|pwd|secret|api[_-]?key|apikey|access[_-]?key"""
        r"""|private[_-]?key)["']?\s*[:=]\s*["']?|\b[\w-]*?token["']?[:=]\s*["']?)"""
        r"""[^\s"',;&]+""",
        re.IGNORECASE,
    ),
    # --api-key abc / --token=abc on a command line
    re.compile(
        r"(--[\w-]*(?:password|secret|api-key|token)(?:=|\s+))[^\s\-][^\s]*",
        re.IGNORECASE,
    ),
    # scheme://user:password@host
    re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+(?=@)", re.IGNORECASE),
)
# Tokens recognisable by their shape alone: OpenAI, Hugging Face, GitHub, Slack, AWS key ids.
_TOKEN_SHAPES = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16})\b"
)


def redact(text: str) -> str:
    """Mask what looks like a secret (auth headers, bearer tokens, passwords, API keys)."""
    for pattern in _REDACTIONS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return _TOKEN_SHAPES.sub(MASK, text)


class RedactFilter(logging.Filter):
    """Rewrites each record's message through `redact` (attached to `power.runner`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


# DEL, C1 controls, the Unicode line and paragraph separators, and the bidirectional marks and
# overrides (which can make a line read as something else): json.dumps leaves these as they are
_UNSAFE = r"\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
_JSON_UNSAFE = re.compile(f"[{_UNSAFE}]")
_CONTROLS = re.compile(rf"[\x00-\x08\x0a-\x1f{_UNSAFE}]")  # C0 controls too (tab aside)
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_controls(text: str) -> str:
    """``text`` with control characters written as escapes (``\\n``, ``\\x1b``, ``\\u2028``), so
    that it stays on one line and says nothing to a terminal."""
    return _CONTROLS.sub(_escaped, text)


def level_for(debug: int) -> int:
    """`Settings.debug` (`OLLAMA_DEBUG`) as a `logging` level."""
    if debug >= 2:
        return TRACE
    if debug == 1:
        return logging.DEBUG
    if debug == 0:
        return logging.INFO
    return logging.WARNING if debug == -1 else logging.ERROR


class TextFormatter(logging.Formatter):
    """The text format (``_FORMAT``), one line per record: control characters in the message
    are escaped, and in a traceback all but its line breaks."""

    def __init__(self, fmt: str = _FORMAT, datefmt: str = _DATE_FORMAT) -> None:
        super().__init__(fmt, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return _escape_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _escape_lines(super().formatStack(stack_info))


def _escape_lines(text: str) -> str:
    return "\n".join(escape_controls(line) for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, message, and ``record.fields``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        text = json.dumps(out, ensure_ascii=False)
        return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class AccessLog:
    """An ``Observer``: one INFO line per request under ``power.access``; never headers."""

    def __init__(self) -> None:
        self._log = logging.getLogger(ACCESS_LOGGER)

    def request_done(self, info: RequestInfo) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        route = info.route or info.path[:200]
        # an IPv4 client of a dual-stack listener, as Go shows it (127.0.0.1, not ::ffff:...)
        client = info.client.removeprefix(_MAPPED) if info.client.count(":") == 4 else info.client
        fields: dict[str, Any] = {
            "method": info.method,
            "route": route,
            "status": info.status,
            "duration_s": round(info.duration_s, 4),
            "client": client,
        }
        text = f"{info.method} {route} {info.status} {info.duration_s:.3f}s"
        if info.inference:
            fields.update(model=info.model, prompt_tokens=info.prompt_tokens,
                          output_tokens=info.output_tokens)  # fmt: skip
            text += (
                f" model={info.model} prompt_tokens={info.prompt_tokens}"
                f" output_tokens={info.output_tokens}"
            )
        if info.error:
            fields["error"] = info.error
            text += f" error={info.error!r}"
        self._log.info("%s client=%s", text, client, extra={"fields": fields})


class RotatingLog(logging.handlers.RotatingFileHandler):
    """A size-rotated log file that also takes over ``fds`` (stdout and stderr in the daemon).

    Whatever bypasses logging (a traceback at exit, a C library's message) then lands in the
    current file and rotates with it, instead of growing the file it was started with.
    """

    def __init__(
        self, filename: str, *, max_bytes: int, backups: int, fds: tuple[int, ...] = ()
    ) -> None:
        self._fds = fds
        super().__init__(filename, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")

    def _open(self) -> Any:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        stream = super()._open()
        for fd in self._fds:
            os.dup2(stream.fileno(), fd)
        return stream


def configure_logging(
    debug: int, *, fmt: str = "text", file: str = "", max_bytes: int = 0, backups: int = 0
) -> None:
    """Configure the root logger once, at startup: one handler, one line format (``fmt``
    "text", or "json": a JSON object per line). The handler writes to stderr, or with ``file``
    to that file, rotated at ``max_bytes`` keeping ``backups`` old ones (``server.log.1`` ...),
    and stdout and stderr are pointed at it."""
    logging.addLevelName(TRACE, "TRACE")
    level = logging.getLevelName(level_for(debug))
    # Other libraries (httpcore, asyncio, uvicorn) stay at INFO unless debug >= 2.
    root_level = logging.DEBUG if debug >= 2 else max(level_for(debug), logging.INFO)
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactFilter}},
        "formatters": {
            "text": {"()": TextFormatter},
            "json": {"()": JsonFormatter},
        },
        "handlers": {
            "out": {
                "class": "logging.StreamHandler",
                "formatter": fmt,
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "power": {"level": level},
            RUNNER_LOGGER: {"level": level, "filters": ["redact"]},
        },
        "root": {"level": logging.getLevelName(root_level), "handlers": ["out"]},
    }
    if file:
        sys.stdout.flush()
        sys.stderr.flush()
        config["handlers"]["out"] = {
            "()": RotatingLog,
            "formatter": fmt,
            "filename": file,
            "max_bytes": max_bytes,
            "backups": backups,
            "fds": (sys.stdout.fileno(), sys.stderr.fileno()),
        }
    logging.config.dictConfig(config)
