"""One `power run` conversation: what it sends with each /api/chat, and each reply streamed."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from power.cli.client import Client
from power.cli.format import timings

__all__ = ["Session", "WordWrapper", "chat"]


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
