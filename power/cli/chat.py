"""One `power run` conversation: what it sends with each /api/chat, and each reply streamed.

Ctrl+C while a reply streams closes the connection, which is how the server learns to cancel
the generation (its stream watches for the client going); the caller gets None and the REPL
carries on. On a terminal a spinner runs on stderr until the first token arrives.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from power.cli.client import Client
from power.cli.display import ReplyPrinter
from power.cli.format import timings
from power.cli.images import extract_images
from power.cli.progress import Spinner

__all__ = ["Session", "adopt_model", "chat", "load_model", "user_message"]


@dataclass
class Session:
    """What one `run` conversation sends with every /api/chat request.

    ``messages`` are this session's turns; ``loaded_messages`` are the model's own MESSAGE
    lines (from /api/show), which the server prepends by itself and `/save` writes back.
    """

    model: str
    format: str | None = None
    keep_alive: str | float | None = None
    think: bool | str | None = None
    think_set: bool = False  # the user chose `think`; otherwise each model's default applies
    hide_thinking: bool = False
    verbose: bool = False
    word_wrap: bool = False
    vision: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    loaded_messages: list[dict[str, Any]] = field(default_factory=list)

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


def adopt_model(session: Session, name: str, info: Mapping[str, Any]) -> None:
    """Make ``name`` the session's model, with what its /api/show answer implies.

    As in Ollama, a model that can think thinks unless the user said otherwise, and a vision
    model takes image paths in prompts.
    """
    caps = info.get("capabilities") or []
    session.model = name
    session.vision = "vision" in caps or bool(info.get("projector_info"))
    session.loaded_messages = list(info.get("messages") or [])
    if not session.think_set:
        session.think = True if "thinking" in caps else None


def load_model(client: Client, session: Session) -> None:
    """Ollama's preload: an empty-prompt /api/generate, with a spinner on a terminal.

    It carries ``think`` so that a model that cannot think fails here, before the first prompt.
    """
    body: dict[str, Any] = {"model": session.model, "prompt": "", "stream": False}
    if session.keep_alive is not None:
        body["keep_alive"] = session.keep_alive
    if session.think is not None:
        body["think"] = session.think
    if not sys.stderr.isatty():
        client.post("/api/generate", body)
        return
    with Spinner(lambda text: click.echo(text, nl=False, err=True)):
        client.post("/api/generate", body)


def user_message(session: Session, text: str) -> dict[str, Any]:
    """The user's turn for ``text``: for a model with vision, the image files it names are read
    and attached (each announced on stderr, as Ollama does). ``ImageError`` when one cannot be."""
    message: dict[str, Any] = {"role": "user", "content": text}
    if session.vision:
        prompt = extract_images(text)
        for path in prompt.paths:
            click.echo(f"Added image '{path}'", err=True)
        message["content"] = prompt.text
        if prompt.images:
            message["images"] = prompt.images
    return message


def _echo(text: str) -> None:
    click.echo(text, nl=False)


def chat(client: Client, session: Session) -> dict[str, Any] | None:
    """Stream one reply to stdout; None when interrupted with Ctrl+C."""
    tty = sys.stdout.isatty()
    printer = ReplyPrinter(
        _echo,
        columns=shutil.get_terminal_size().columns if session.word_wrap and tty else None,
        color=tty,
        hide_thinking=session.hide_thinking,
    )
    spinner = Spinner(lambda text: click.echo(text, nl=False, err=True))
    if sys.stderr.isatty():
        spinner.start()
    content: list[str] = []
    thinking: list[str] = []
    final: Mapping[str, Any] = {}
    try:
        stream = client.stream("/api/chat", session.request())
        try:
            for chunk in stream:
                message = chunk.get("message") or {}
                if message.get("content") or (message.get("thinking") and not printer.hides):
                    spinner.stop()
                if message.get("thinking"):
                    thinking.append(message["thinking"])
                    printer.thinking(message["thinking"])
                if message.get("content"):
                    content.append(message["content"])
                    printer.content(message["content"])
                if chunk.get("done"):
                    final = chunk
        finally:
            stream.close()
    except KeyboardInterrupt:
        spinner.stop()
        printer.finish(interrupted=True)
        click.echo()
        return None
    finally:
        spinner.stop()
    printer.finish()
    click.echo("\n")
    if session.verbose:
        click.echo(timings(final), err=True, nl=False)
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    if thinking:
        reply["thinking"] = "".join(thinking)
    return reply
