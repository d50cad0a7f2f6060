"""The ``>>>`` loop of `power run`: read a message (multi-line with triple quotes), run a slash
command or send it, and keep the conversation in the `Session`.

Ctrl+C at the prompt drops the line being typed; Ctrl+C while an answer streams stops it (see
`power.cli.chat`); Ctrl+D at the prompt, ``/bye`` or ``/exit`` leave. A vision model's message
may name image files (`power.cli.images`); a line that starts with such a path is a message,
not an unknown command.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from power.cli import slash
from power.cli.chat import Session, chat, user_message
from power.cli.client import Client, ResponseError
from power.cli.history import LineReader
from power.cli.images import ImageError, starts_with_image

__all__ = ["interactive", "read_message"]

_QUOTES = '"""'
_SET_SYSTEM = "/set system "


def read_message(
    read_line: Callable[[str], str], record: Callable[[str], None]
) -> tuple[str, bool]:
    """One message: a line, or the lines between triple quotes (also after ``/set system``);
    and whether it was quoted (a quoted message is never a command)."""
    line = read_line(">>> ")
    record(line)
    head = _SET_SYSTEM if line.startswith(_SET_SYSTEM) else ""
    rest = line[len(head) :].lstrip() if head else line
    if not rest.startswith(_QUOTES):
        return line, False
    rest = rest[len(_QUOTES) :]
    if rest.endswith(_QUOTES):
        return head + rest[: -len(_QUOTES)], not head
    parts = [rest]
    while True:
        line = read_line("... ")
        record(line)
        before, closed = (line[: -len(_QUOTES)], True) if line.endswith(_QUOTES) else (line, False)
        parts.append(before)
        if closed:
            return head + "\n".join(parts).strip("\n"), not head


def _send(client: Client, session: Session, text: str) -> None:
    try:
        message = user_message(session, text)
    except ImageError as exc:
        click.echo(f"Error: {exc}", err=True)
        return
    session.messages.append(message)
    try:
        reply = chat(client, session)
    except ResponseError as exc:
        session.messages.pop()
        click.echo(f"Error: {exc}", err=True)
        return
    if reply is None:  # stopped with Ctrl+C: the question goes too
        session.messages.pop()
    else:
        session.messages.append(reply)


def _command(client: Client, session: Session, history: LineReader, line: str) -> bool:
    """Run a slash command; False when the REPL should end."""
    args = line.split()
    command = args[0]
    if command in {"/bye", "/exit"}:
        return False
    if command == "/clear":
        session.messages.clear()
        click.echo("Cleared session context")
    elif command == "/set":
        slash.set_(client, session, history, line)
    elif command == "/show":
        slash.show(client, session, args[1] if len(args) > 1 else "")
    elif command == "/load":
        slash.load(client, session, args)
    elif command == "/save":
        slash.save(client, session, args)
    elif command in {"/?", "/help"}:
        slash.help_(session, args[1] if len(args) > 1 else "")
    else:
        click.echo(f"Unknown command '{command}'. Type /? for help")
    return True


def interactive(client: Client, session: Session, history: LineReader) -> None:
    """The ``>>>`` loop, until /bye or Ctrl+D."""
    while True:
        try:
            line, quoted = read_message(history.read_line, history.record)
        except EOFError:
            click.echo()
            return
        except KeyboardInterrupt:
            click.echo("\nUse Ctrl + d or /bye to exit.")
            continue
        if not line.strip():
            continue
        is_image = session.vision and starts_with_image(line)
        if line.startswith("/") and not quoted and not is_image:
            try:
                if not _command(client, session, history, line):
                    return
            except ResponseError as exc:
                click.echo(f"Error: {exc}", err=True)
            continue
        _send(client, session, line)
