"""`power run`: make sure a server answers, load the model, then chat once or interactively."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from power._cli_format import Progress, Spinner, render_show_info, timings
from power.client import Client, ConnectError, ResponseError
from power.location import client_home

__all__ = [
    "Session",
    "WordWrapper",
    "chat",
    "ensure_server",
    "interactive",
    "show_field",
    "show_progress",
]

SERVER_START_TIMEOUT_S = 30.0
_POLL_S = 0.1

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use \"\"\" to begin a multi-line message.
"""
HELP_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set think             Enable thinking
  /set nothink           Disable thinking
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
"""
HELP_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template
"""


def ensure_server(client: Client, env: Mapping[str, str]) -> None:
    """Start ``python -m power serve`` in the background unless a server already answers."""
    if client.heartbeat():
        return
    if not client.is_local:
        raise ConnectError(f"could not connect to a Power server at {client.base_url}")
    log_path = client_home(env) / "logs" / "server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        # posix_spawn leaves no Popen object behind: the daemon outlives us by design.
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "power", "serve"],
            dict(env),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if client.heartbeat():
            return
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            break
        time.sleep(_POLL_S)
    raise ConnectError(f"could not start the Power server; see {log_path}")


def show_progress(events: Iterable[Mapping[str, Any]]) -> None:
    """Render a pull/push/create stream on stderr."""
    stderr = sys.stderr
    progress = Progress(
        lambda text: click.echo(text, nl=False, err=True),
        tty=stderr.isatty(),
        width=shutil.get_terminal_size().columns,
    )
    try:
        for event in events:
            progress.update(event)
    finally:
        progress.finish()


class WordWrapper:
    """Break streamed text at word boundaries to fit the terminal width."""

    def __init__(self, width: int) -> None:
        self.width, self.col, self.word = max(width, 10), 0, ""

    def feed(self, text: str) -> str:
        out = []
        for ch in text:
            if ch not in " \n":
                self.word += ch
                continue
            out.append(self.flush())
            out.append(ch)
            self.col = 0 if ch == "\n" else self.col + 1
        return "".join(out)

    def flush(self) -> str:
        word, self.word = self.word, ""
        if self.col > 0 and self.col + len(word) > self.width:
            self.col = len(word)
            return "\n" + word
        self.col += len(word)
        return word


@dataclass
class Session:
    """What one `run` conversation sends with every /api/chat request."""

    model: str
    format: str | None = None
    keep_alive: str | float | None = None
    think: bool | str | None = None
    hide_thinking: bool = False
    verbose: bool = False
    word_wrap: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)

    def request(self) -> dict[str, Any]:
        messages = list(self.messages)
        if self.system is not None:
            messages.insert(0, {"role": "system", "content": self.system})
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        for key, value in (
            ("format", self.format),
            ("keep_alive", self.keep_alive),
            ("think", self.think),
            ("options", self.options or None),
        ):
            if value is not None:
                body[key] = value
        return body


def chat(client: Client, session: Session) -> dict[str, Any] | None:
    """Stream one reply to stdout; None when interrupted with Ctrl+C."""
    wrap = WordWrapper(shutil.get_terminal_size().columns) if session.word_wrap else None
    content: list[str] = []
    thinking: list[str] = []
    final: Mapping[str, Any] = {}

    def out(text: str) -> None:
        text = wrap.feed(text) if wrap else text
        if text:
            click.echo(text, nl=False)

    stream = client.stream("/api/chat", session.request())
    try:
        for chunk in stream:
            message = chunk.get("message") or {}
            if message.get("thinking"):
                if not thinking and not session.hide_thinking:
                    out("Thinking...\n")
                thinking.append(message["thinking"])
                if not session.hide_thinking:
                    out(message["thinking"])
            if message.get("content"):
                if thinking and not content and not session.hide_thinking:
                    out("\n...done thinking.\n\n")
                content.append(message["content"])
                out(message["content"])
            if chunk.get("done"):
                final = chunk
    except KeyboardInterrupt:
        click.echo()
        return None
    finally:
        stream.close()
    tail = wrap.flush() if wrap else ""
    shown = "".join(content) or ("" if session.hide_thinking else "".join(thinking))
    click.echo(tail, nl=bool(shown) and not shown.endswith("\n"))
    if session.verbose:
        click.echo(timings(final), err=True, nl=False)
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    if thinking:
        reply["thinking"] = "".join(thinking)
    return reply


def load_model(client: Client, session: Session) -> None:
    """Ollama's preload: an empty-prompt /api/generate, with a spinner on a terminal."""
    body: dict[str, Any] = {"model": session.model, "prompt": "", "stream": False}
    if session.keep_alive is not None:
        body["keep_alive"] = session.keep_alive
    if not sys.stderr.isatty():
        client.post("/api/generate", body)
        return
    with Spinner(lambda text: click.echo(text, nl=False, err=True)):
        client.post("/api/generate", body)


def _read_message(read_line: Callable[[str], str]) -> str:
    line = read_line(">>> ")
    if not line.startswith('"""'):
        return line
    rest = line[3:]
    if rest.endswith('"""') and len(line) >= 6:
        return rest[:-3]
    parts = [rest]
    while True:
        line = read_line("... ")
        before, closed = (line[:-3], True) if line.endswith('"""') else (line, False)
        parts.append(before)
        if closed:
            return "\n".join(parts).strip("\n")


_MISSING = {
    "license": "No license was specified for this model.",
    "parameters": "No parameters were specified for this model.",
    "system": "No system message was specified for this model.",
    "template": "No prompt template was specified for this model.",
    "modelfile": "",
}


def show_field(resp: Mapping[str, Any], what: str) -> str:
    """One field of /api/show as `show --license` etc. print it."""
    return str(resp.get(what) or "").rstrip("\n") or _MISSING[what]


def _show(client: Client, session: Session, what: str) -> None:
    if what not in _MISSING and what != "info":
        click.echo(HELP_SHOW, nl=False)
        return
    resp = client.post("/api/show", {"model": session.model}) or {}
    if what == "info":
        click.echo(render_show_info(resp), nl=False)
    elif what == "system" and session.system is not None:
        click.echo(session.system)
    else:
        click.echo(show_field(resp, what))
        if what == "parameters" and session.options:
            click.echo("\nUser defined parameters:")
            for key, value in session.options.items():
                click.echo(f"{key:<30} {value}")


_TOGGLES: dict[str, tuple[str, object, str]] = {
    "verbose": ("verbose", True, "Set 'verbose' mode."),
    "quiet": ("verbose", False, "Set 'quiet' mode."),
    "noformat": ("format", None, "Disabled format."),
    "think": ("think", True, "Set 'think' mode."),
    "nothink": ("think", False, "Set 'nothink' mode."),
    "wordwrap": ("word_wrap", True, "Set 'wordwrap' mode."),
    "nowordwrap": ("word_wrap", False, "Set 'nowordwrap' mode."),
    "history": ("", None, ""),
    "nohistory": ("", None, ""),
}


def _set_parameter(session: Session, name: str, values: list[str]) -> None:
    from power.errors import PowerError
    from power.store.modelfile import parse_parameter

    try:
        if name == "stop":
            value: Any = list(values)
        else:
            value = parse_parameter(name, " ".join(values))
    except PowerError as exc:
        click.echo(f"Couldn't set parameter: {exc}")
        return
    session.options[name] = value
    click.echo(f"Set parameter '{name}' to '{', '.join(values)}'")


def _set(session: Session, args: list[str], line: str) -> None:
    what = args[1] if len(args) > 1 else ""
    if what == "parameter" and len(args) >= 4:
        _set_parameter(session, args[2], args[3:])
    elif what == "system" and len(args) >= 3:
        session.system = line.split("system", 1)[1].strip().strip('"')
        click.echo("Set system message.")
    elif what == "format" and args[2:] == ["json"]:
        session.format = "json"
        click.echo("Set format to 'json' mode.")
    elif what in _TOGGLES:
        attr, value, message = _TOGGLES[what]
        if attr:
            setattr(session, attr, value)
        if message:
            click.echo(message)
    elif what in {"", "parameter", "system", "format"}:
        click.echo(HELP_SET, nl=False)
    else:
        click.echo(f"Unknown command '/set {what}'. Type /? for help")


def interactive(
    client: Client, session: Session, *, read_line: Callable[[str], str] = input
) -> None:
    """The ``>>>`` loop: slash commands, multi-line input, history kept in ``session``."""
    while True:
        try:
            line = _read_message(read_line)
        except EOFError:
            click.echo()
            return
        except KeyboardInterrupt:
            click.echo("\nUse Ctrl + d or /bye to exit.")
            continue
        args = line.split()
        command = args[0] if args else ""
        if not line.strip():
            continue
        if command in {"/bye", "/exit"}:
            return
        if command == "/clear":
            session.messages.clear()
            click.echo("Cleared session context")
        elif command == "/set":
            _set(session, args, line)
        elif command == "/show":
            _show(client, session, args[1] if len(args) > 1 else "")
        elif command in {"/?", "/help"}:
            topic = args[1] if len(args) > 1 else ""
            click.echo({"set": HELP_SET, "show": HELP_SHOW}.get(topic, HELP), nl=False)
        elif command.startswith("/"):
            click.echo(f"Unknown command '{command}'. Type /? for help")
        else:
            session.messages.append({"role": "user", "content": line})
            try:
                reply = chat(client, session)
            except ResponseError as exc:
                session.messages.pop()
                click.echo(f"Error: {exc}", err=True)
                continue
            if reply is None:
                session.messages.pop()
            else:
                session.messages.append(reply)
                click.echo()
