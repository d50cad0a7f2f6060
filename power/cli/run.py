"""`power run`: make sure a server answers, load the model, then chat once or interactively."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

from power.cli.chat import Session, chat
from power.cli.client import Client, ConnectError, ResponseError
from power.cli.progress import Spinner, show_progress
from power.cli.repl import interactive
from power.location import client_home

__all__ = ["ensure_server", "load_model", "run"]

SERVER_START_TIMEOUT_S = 30.0
_POLL_S = 0.1
_THINK_LEVELS = {"low", "medium", "high", "max"}


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


def _keep_alive(value: str | None) -> str | float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
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
    low = value.lower()
    if low in {"true", "false"}:
        return low == "true"
    if low in _THINK_LEVELS:
        return low
    raise click.BadParameter(
        f"{value!r}; use --think, --think=false or --think=low|medium|high", param_hint="--think"
    )


def _ensure_model(client: Client, model: str, insecure: bool) -> dict[str, Any]:
    try:
        return dict(client.post("/api/show", {"model": model}) or {})
    except ResponseError as exc:
        if exc.status != 404:
            raise
    show_progress(client.stream("/api/pull", {"model": model, "insecure": insecure}))
    return dict(client.post("/api/show", {"model": model}) or {})


@click.command()
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--keepalive", default=None, help="How long to keep the model loaded (e.g. 5m).")
@click.option("--verbose", is_flag=True, help="Show timings for the response.")
@click.option("--format", "format_", type=click.Choice(["json"]), default=None)
@click.option("--nowordwrap", is_flag=True, help="Don't wrap words to the next line.")
@click.option("--think", is_flag=False, flag_value="true", default=None, help="Enable thinking.")
@click.option("--hidethinking", is_flag=True, help="Hide thinking output.")
@click.option("--insecure", is_flag=True, help="Use an insecure registry when pulling.")
def run(
    model: str,
    prompt: Sequence[str],
    keepalive: str | None,
    verbose: bool,
    format_: str | None,
    nowordwrap: bool,
    think: str | None,
    hidethinking: bool,
    insecure: bool,
) -> None:
    """Run a model, once with PROMPT or interactively without one."""
    session = Session(
        model=model,
        format=format_,
        keep_alive=_keep_alive(keepalive),
        think=_think(think),
        hide_thinking=hidethinking,
        verbose=verbose,
    )
    text = " ".join(prompt)
    stdin = sys.stdin
    piped = not stdin.isatty()
    if piped:
        data = stdin.read()
        if data:
            text = f"{data} {text}" if text else data
    session.word_wrap = not nowordwrap and not piped and sys.stdout.isatty()
    client = Client.from_env()
    ensure_server(client, os.environ)
    info = _ensure_model(client, model, insecure)
    if "embedding" in (info.get("capabilities") or []):
        if not text.strip():
            raise click.UsageError("embedding models require input text")
        resp = client.post("/api/embed", {"model": model, "input": text})
        for vector in resp.get("embeddings") or []:
            click.echo(json.dumps(vector))
        return
    load_model(client, session)
    if not text.strip():
        if not piped:
            import readline  # noqa: F401  (line editing for input())
        interactive(client, session)
        return
    session.messages.append({"role": "user", "content": text})
    if chat(client, session) is None:
        sys.exit(130)
