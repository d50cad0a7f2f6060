"""The model commands: list, ps, show, stop, rm, cp, pull, push (each a call to the API)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

from power.cli.client import Client, ResponseError
from power.cli.format import human_bytes, human_time, parse_time, processor, render_table
from power.cli.progress import show_progress
from power.cli.show import FIELDS, render_show_info, show_field

__all__ = ["COMMANDS"]


@click.command("list")
@click.argument("prefix", required=False)
def list_(prefix: str | None) -> None:
    """List models (alias: ls), the most recently modified first."""
    now = datetime.now(UTC)
    models = (Client.from_env().get("/api/tags") or {}).get("models") or []
    oldest = datetime.min.replace(tzinfo=UTC)
    want = (prefix or "").lower()  # (case aside, as Ollama's `ls`)
    models = sorted(models, key=lambda m: parse_time(m.get("modified_at")) or oldest, reverse=True)
    rows = [
        [
            str(m.get("name", "")),
            str(m.get("digest", "")).removeprefix("sha256:")[:12],
            human_bytes(int(m.get("size") or 0)),
            human_time(parse_time(m.get("modified_at")), now),
        ]
        for m in models
        if str(m.get("name", "")).lower().startswith(want)
    ]
    click.echo(render_table(["NAME", "ID", "SIZE", "MODIFIED"], rows), nl=False)


@click.command()
def ps() -> None:
    """List running models."""
    now = datetime.now(UTC)
    models = (Client.from_env().get("/api/ps") or {}).get("models") or []
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


@click.command()
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
    chosen = [name for name in sorted(FIELDS) if flags.get(name)]
    if len(chosen) > 1:
        raise click.UsageError(
            "only one of '--license', '--modelfile', '--parameters', '--system', "
            "or '--template' can be specified"
        )
    body: dict[str, Any] = {"model": model}
    if verbose:
        body["verbose"] = True
    resp = Client.from_env().post("/api/show", body) or {}
    if chosen:
        click.echo(show_field(resp, chosen[0]))
    else:
        click.echo(render_show_info(resp, verbose=verbose), nl=False)


def _unload(client: Client, model: str) -> None:
    client.post("/api/generate", {"model": model, "prompt": "", "keep_alive": 0, "stream": False})


@click.command()
@click.argument("model")
def stop(model: str) -> None:
    """Stop a running model."""
    try:
        _unload(Client.from_env(), model)
    except ResponseError as exc:
        if exc.status == 404 or "not found" in exc.message:
            raise ResponseError(f'couldn\'t find model "{model}" to stop', exc.status) from exc
        raise


@click.command()
@click.argument("models", nargs=-1, required=True)
def rm(models: Sequence[str]) -> None:
    """Remove one or more models (alias: delete)."""
    client = Client.from_env()
    for model in models:
        try:
            _unload(client, model)
        except ResponseError as exc:
            if exc.status != 404 and "not found" not in exc.message:
                click.echo(f"Warning: unable to stop model '{model}'", err=True)
        client.delete("/api/delete", {"model": model})
        click.echo(f"deleted '{model}'")


@click.command()
@click.argument("source")
@click.argument("destination")
def cp(source: str, destination: str) -> None:
    """Copy a model."""
    Client.from_env().post("/api/copy", {"source": source, "destination": destination})
    click.echo(f"copied '{source}' to '{destination}'")


@click.command()
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use an insecure registry (http).")
def pull(model: str, insecure: bool) -> None:
    """Pull a model from a registry."""
    show_progress(Client.from_env().stream("/api/pull", {"model": model, "insecure": insecure}))


@click.command()
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use an insecure registry (http).")
def push(model: str, insecure: bool) -> None:
    """Push a model to a registry."""
    show_progress(Client.from_env().stream("/api/push", {"model": model, "insecure": insecure}))


COMMANDS = (list_, ps, show, stop, rm, cp, pull, push)
