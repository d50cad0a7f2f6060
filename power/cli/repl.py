"""The ``>>>`` loop of `power run`: slash commands, multi-line input, history in the `Session`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from power.cli.chat import Session, chat
from power.cli.client import Client, ResponseError
from power.cli.show import FIELDS, render_show_info, show_field

__all__ = ["HELP", "HELP_SET", "HELP_SHOW", "interactive"]

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


def _show(client: Client, session: Session, what: str) -> None:
    if what not in FIELDS and what != "info":
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
