"""`power run`: make sure a server answers and has the model, then answer once or open the REPL.

The flags and input rules are Ollama's (``RunHandler``):

- ``--think`` and ``--truncate`` take a value only as ``--think=low``; a bare ``--think`` is the
  flag, so ``power run m --think "why?"`` asks "why?" with thinking on.
- Standard input that is not a terminal is read and put before the prompt's words
  (``power run m "summarise:" < notes.txt``); then, or with a prompt, or when stdout is not a
  terminal, it answers once and exits.
- An embedding model prints the prompt's vector as Go's JSON (``--truncate``, ``--dimensions``).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

from power.cli.chat import Session, adopt_model, chat, load_model, user_message
from power.cli.client import Client, ConnectError, ResponseError
from power.cli.display import ReplyPrinter
from power.cli.format import go_float32_json
from power.cli.history import History
from power.cli.images import ImageError
from power.cli.progress import show_progress
from power.cli.repl import interactive
from power.location import client_home

__all__ = ["ensure_server", "run"]

SERVER_START_TIMEOUT_S = 30.0
_POLL_S = 0.1
_THINK_LEVELS = {"low", "medium", "high", "max"}
# pflag's NoOptDefVal: these take a value only after "=", a bare flag means the default shown.
_OPTIONAL_VALUE = {"--think": "--think=true", "--truncate": "--truncate=true"}


def ensure_server(client: Client, env: Mapping[str, str]) -> None:
    """Start ``python -m power serve`` in the background unless a server already answers.

    It logs to ``<home>/logs/server.log``, rotated (``A3S_POWER_LOG_FILE``); what it prints
    before its logging is set up (a bad config.toml) goes to the same file. It records its pid
    under the data folder itself (`power.daemon`); ``power service stop`` stops it.
    """
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
            {**env, "A3S_POWER_LOG_FILE": str(log_path)},  # rotated from then on
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


class _RunCommand(click.Command):
    """Rewrites a bare ``--think``/``--truncate`` to ``=true`` before click parses."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            args = [_OPTIONAL_VALUE.get(a, a) for a in args[:cut]] + args[cut:]
        else:
            args = [_OPTIONAL_VALUE.get(a, a) for a in args]
        return super().parse_args(ctx, args)


def _keep_alive(value: str | None) -> str | None:
    """Go's ``time.ParseDuration``, as Ollama checks ``--keepalive``; sent as written."""
    if value is None:
        return None
    from power.duration import parse_go_duration
    from power.errors import PowerError

    try:
        parse_go_duration(value)
    except (PowerError, ValueError) as exc:
        raise click.BadParameter(f"invalid duration {value!r}", param_hint="--keepalive") from exc
    return value


def _think(value: str | None) -> bool | str | None:
    if value is None:
        return None
    if value in {"true", "false"}:
        return value == "true"
    if value in _THINK_LEVELS:
        return value
    raise click.BadParameter(
        f"{value!r} (must be true, false, high, medium, low, or max)", param_hint="--think"
    )


def _show_or_pull(client: Client, model: str, insecure: bool) -> dict[str, Any]:
    try:
        return dict(client.post("/api/show", {"model": model}) or {})
    except ResponseError as exc:
        if exc.status != 404:
            raise
    show_progress(client.stream("/api/pull", {"model": model, "insecure": insecure}))
    return dict(client.post("/api/show", {"model": model}) or {})


def _embed(client: Client, session: Session, text: str, truncate: bool | None, dims: int) -> None:
    if not text:
        raise click.UsageError(
            f'embedding models require input text. Usage: power run {session.model} "your text"'
        )
    body: dict[str, Any] = {"model": session.model, "input": text}
    if session.keep_alive is not None:
        body["keep_alive"] = session.keep_alive
    if truncate is not None:
        body["truncate"] = truncate
    if dims > 0:
        body["dimensions"] = dims
    vectors = (client.post("/api/embed", body) or {}).get("embeddings") or []
    if not vectors:
        raise ResponseError("no embeddings returned")
    click.echo(go_float32_json(vectors[0]))


def _answer_once(client: Client, session: Session, text: str) -> None:
    try:
        message = user_message(session, text)
    except ImageError as exc:
        raise click.ClickException(str(exc)) from exc
    session.messages.append(message)
    if chat(client, session) is None:
        sys.exit(130)


def _replay(session: Session) -> None:
    """Print a saved model's conversation before its first prompt, as Ollama does."""
    for msg in session.loaded_messages:
        if msg.get("role") == "user":
            click.echo(f">>> {msg.get('content', '')}")
        elif msg.get("role") == "assistant":
            printer = ReplyPrinter(
                lambda text: click.echo(text, nl=False),
                columns=shutil.get_terminal_size().columns if session.word_wrap else None,
                color=False,
                hide_thinking=True,
            )
            printer.content(str(msg.get("content", "")))
            printer.finish()
            click.echo("\n")


@click.command(cls=_RunCommand)
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--keepalive", default=None, help="Duration to keep a model loaded (e.g. 5m).")
@click.option("--verbose", is_flag=True, help="Show timings for response.")
@click.option("--insecure", is_flag=True, help="Use an insecure registry.")
@click.option("--nowordwrap", is_flag=True, help="Don't wrap words to the next line automatically.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["json"]),
    default=None,
    help="Response format (e.g. json).",
)
@click.option(
    "--think",
    metavar="[=true|false|high|medium|low]",
    default=None,
    help="Enable thinking mode: true/false or high/medium/low for supported models.",
)
@click.option("--hidethinking", is_flag=True, help="Hide thinking output (if provided).")
@click.option(
    "--truncate",
    metavar="[=true|false]",
    type=click.BOOL,
    default=None,
    help="For embedding models: truncate inputs exceeding context length "
    "(default: true). Set --truncate=false to error instead.",
)
@click.option(
    "--dimensions",
    type=click.IntRange(min=0),
    default=0,
    help="Truncate output embeddings to specified dimension (embedding models only).",
)
def run(
    model: str,
    prompt: Sequence[str],
    keepalive: str | None,
    verbose: bool,
    insecure: bool,
    nowordwrap: bool,
    format_: str | None,
    think: str | None,
    hidethinking: bool,
    truncate: bool | None,
    dimensions: int,
) -> None:
    """Run a model, once with PROMPT or interactively without one."""
    session = Session(
        model=model,
        format=format_,
        keep_alive=_keep_alive(keepalive),
        think=_think(think),
        think_set=think is not None,
        hide_thinking=hidethinking,
        verbose=verbose,
        word_wrap=not nowordwrap and sys.stdout.isatty(),
    )
    words = list(prompt)
    is_interactive = not words and sys.stdout.isatty()
    if not sys.stdin.isatty():
        if data := sys.stdin.read():
            words.insert(0, data)
        is_interactive = False
    text = " ".join(words)
    client = Client.from_env()
    ensure_server(client, os.environ)
    info = _show_or_pull(client, model, insecure)
    adopt_model(session, model, info)
    if "embedding" in (info.get("capabilities") or []):
        _embed(client, session, text, truncate, dimensions)
    elif is_interactive:
        load_model(client, session)
        _replay(session)
        interactive(client, session, History(os.environ))
    elif text:
        _answer_once(client, session, text)
    else:
        load_model(client, session)  # nothing to ask: load it, as Ollama's empty generate does
