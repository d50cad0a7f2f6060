"""The `power` command line: an Ollama-compatible CLI that talks to the server over HTTP only.

Every command except `serve` is a client of the native API (`power.client`). Server errors are
printed as ``Error: <message>`` with exit status 1; misuse is a `click.UsageError` (exit 2).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from power import _cli_run
from power._cli_create import create_request
from power._cli_format import (
    human_bytes,
    human_time,
    parse_time,
    processor,
    render_show_info,
    render_table,
)
from power.client import Client, ConnectError, ResponseError

__all__ = ["main"]

_ALIASES = {"ls": "list", "start": "serve", "delete": "rm"}
_THINK_LEVELS = {"low", "medium", "high", "max"}
_SHOW_FIELDS = ("license", "modelfile", "parameters", "system", "template")


class _CommandError(click.ClickException):
    """A server or connection error: printed as ``Error: ...``, exit 1."""


class _PowerGroup(click.Group):
    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, _ALIASES.get(cmd_name, cmd_name))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ResponseError, ConnectError) as exc:
            raise _CommandError(str(exc)) from exc


class _ServeCommand(click.Command):
    """Lists the environment variables in `serve --help` (imported only when asked)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from power.config import env_help

        with formatter.section("Environment Variables"):
            formatter.write_dl(env_help())


def _client() -> Client:
    return Client.from_env(os.environ)


def _client_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("a3s-power", "power"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "0.0.0"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    client_version = _client_version()
    try:
        server = _client().get("/api/version") or {}
        click.echo(f"power version is {server.get('version', 'unknown')}")
        click.echo(f"client version is {client_version}")
    except (ConnectError, ResponseError):
        click.echo("Warning: could not connect to a running Power server")
        click.echo(f"Warning: client version is {client_version}")
    ctx.exit(0)


@click.group(cls=_PowerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-v",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show version information.",
)
def main() -> None:
    """A3S Power: a drop-in replacement for Ollama."""


@main.command(cls=_ServeCommand)
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (11434).")
@click.option("--models", default=None, help="Path to the models directory.")
@click.option("--keep-alive", default=None, help="How long models stay loaded (e.g. 5m).")
@click.option("--context-length", type=click.IntRange(min=0), default=None)
@click.option("--max-loaded-models", type=click.IntRange(min=0), default=None)
@click.option("--num-parallel", type=click.IntRange(min=0), default=None)
@click.option("--origins", multiple=True, help="Extra allowed CORS origin (repeatable).")
@click.option("--debug", is_flag=True, default=None, help="Log at DEBUG level.")
def serve(**flags: Any) -> None:
    """Start the server (alias: start)."""
    from power.config import ConfigError
    from power.serve import ListenError, run_server

    overrides: dict[str, object] = {k: v for k, v in flags.items() if v not in (None, ())}
    if "origins" in overrides:
        overrides["origins"] = list(flags["origins"])
    if overrides.get("debug"):
        overrides["debug"] = 1
    try:
        code = run_server(overrides)
    except ConfigError as exc:  # a bad setting: one line, no traceback
        click.echo(f"Error: {exc}", err=True)
        code = 2
    except ListenError as exc:  # e.g. the port is taken (another daemon runs)
        click.echo(f"Error: {exc}", err=True)
        code = 1
    sys.exit(code)


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
    _cli_run.show_progress(client.stream("/api/pull", {"model": model, "insecure": insecure}))
    return dict(client.post("/api/show", {"model": model}) or {})


@main.command()
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
    session = _cli_run.Session(
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
    client = _client()
    _cli_run.ensure_server(client, os.environ)
    info = _ensure_model(client, model, insecure)
    if "embedding" in (info.get("capabilities") or []):
        if not text.strip():
            raise click.UsageError("embedding models require input text")
        resp = client.post("/api/embed", {"model": model, "input": text})
        for vector in resp.get("embeddings") or []:
            click.echo(json.dumps(vector))
        return
    _cli_run.load_model(client, session)
    if not text.strip():
        if not piped:
            import readline  # noqa: F401  (line editing for input())
        _cli_run.interactive(client, session)
        return
    session.messages.append({"role": "user", "content": text})
    if _cli_run.chat(client, session) is None:
        sys.exit(130)


@main.command("list")
@click.argument("prefix", required=False)
def list_(prefix: str | None) -> None:
    """List models (alias: ls)."""
    now = datetime.now(UTC)
    models = (_client().get("/api/tags") or {}).get("models") or []
    rows = [
        [
            str(m.get("name", "")),
            str(m.get("digest", "")).removeprefix("sha256:")[:12],
            human_bytes(int(m.get("size") or 0)),
            human_time(parse_time(m.get("modified_at")), now),
        ]
        for m in models
        if not prefix or str(m.get("name", "")).startswith(prefix)
    ]
    click.echo(render_table(["NAME", "ID", "SIZE", "MODIFIED"], rows), nl=False)


@main.command()
def ps() -> None:
    """List running models."""
    now = datetime.now(UTC)
    models = (_client().get("/api/ps") or {}).get("models") or []
    # A3S Power's extra fields: the runner's pid (SIZE is its measured memory) and its load.
    extra = [
        (key, title)
        for key, title in (
            ("pid", "PID"),
            ("requests_in_flight", "IN FLIGHT"),
            ("cpu_mode", "CPU MODE"),  # only when some runner is not in the daemon's default
        )
        if any(key in m for m in models)
    ]
    rows = []
    for m in models:
        size, vram = int(m.get("size") or 0), int(m.get("size_vram") or 0)
        expires = parse_time(m.get("expires_at"))
        until = "Stopping..." if expires and expires < now else human_time(expires, now)
        row = [
            str(m.get("name", "")),
            str(m.get("digest", "")).removeprefix("sha256:")[:12],
            human_bytes(size),
            processor(size, vram),
            str(m.get("context_length") or ""),
            until,
        ]
        row += [str(m.get(key, "")) for key, _ in extra]
        rows.append(row)
    headers = ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL", *(t for _, t in extra)]
    click.echo(render_table(headers, rows), nl=False)


@main.command()
@click.argument("model")
@click.option("--license", "license_", is_flag=True, help="Show the license.")
@click.option("--modelfile", is_flag=True, help="Show the Modelfile.")
@click.option("--parameters", is_flag=True, help="Show parameters.")
@click.option("--template", is_flag=True, help="Show the prompt template.")
@click.option("--system", is_flag=True, help="Show the system message.")
@click.option("-v", "--verbose", is_flag=True, help="Show all model metadata and tensors.")
def show(model: str, license_: bool, verbose: bool, **flags: bool) -> None:
    """Show information for a model."""
    flags["license"] = license_
    chosen = [name for name in _SHOW_FIELDS if flags.get(name)]
    if len(chosen) > 1:
        raise click.UsageError(
            "only one of '--license', '--modelfile', '--parameters', '--system', "
            "or '--template' can be specified"
        )
    body: dict[str, Any] = {"model": model}
    if verbose:
        body["verbose"] = True
    resp = _client().post("/api/show", body) or {}
    if chosen:
        click.echo(_cli_run.show_field(resp, chosen[0]))
    else:
        click.echo(render_show_info(resp, verbose=verbose), nl=False)


def _unload(client: Client, model: str) -> None:
    client.post("/api/generate", {"model": model, "prompt": "", "keep_alive": 0, "stream": False})


@main.command()
@click.argument("model")
def stop(model: str) -> None:
    """Stop a running model."""
    try:
        _unload(_client(), model)
    except ResponseError as exc:
        if exc.status == 404 or "not found" in exc.message:
            raise ResponseError(f'couldn\'t find model "{model}" to stop', exc.status) from exc
        raise


@main.command()
@click.argument("models", nargs=-1, required=True)
def rm(models: Sequence[str]) -> None:
    """Remove one or more models (alias: delete)."""
    client = _client()
    for model in models:
        try:
            _unload(client, model)
        except ResponseError as exc:
            if exc.status != 404 and "not found" not in exc.message:
                click.echo(f"Warning: unable to stop model '{model}'", err=True)
        client.delete("/api/delete", {"model": model})
        click.echo(f"deleted '{model}'")


@main.command()
@click.argument("source")
@click.argument("destination")
def cp(source: str, destination: str) -> None:
    """Copy a model."""
    _client().post("/api/copy", {"source": source, "destination": destination})
    click.echo(f"copied '{source}' to '{destination}'")


@main.command()
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use an insecure registry (http).")
def pull(model: str, insecure: bool) -> None:
    """Pull a model from a registry."""
    _cli_run.show_progress(_client().stream("/api/pull", {"model": model, "insecure": insecure}))


@main.command()
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use an insecure registry (http).")
def push(model: str, insecure: bool) -> None:
    """Push a model to a registry."""
    _cli_run.show_progress(_client().stream("/api/push", {"model": model, "insecure": insecure}))


@main.command()
@click.argument("model")
@click.option(
    "-f",
    "--file",
    "file_",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Name of the Modelfile (default: Modelfile).",
)
@click.option("-q", "--quantize", default=None, help="Quantize the model (e.g. q4_K_M).")
def create(model: str, file_: Path | None, quantize: str | None) -> None:
    """Create a model from a Modelfile."""
    path = file_ or Path("Modelfile")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _CommandError(f"reading {path}: {exc.strerror or exc}") from exc
    client = _client()
    request = create_request(client, model, text, base=path.resolve().parent)
    if quantize:
        request["quantize"] = quantize
    _cli_run.show_progress(client.stream("/api/create", request))
