"""The `power` command line: an Ollama-compatible CLI that talks to the server over HTTP only.

Every command except `serve` is a client of the native API (`power.cli.client`). Server errors are
printed as ``Error: <message>`` with exit status 1; misuse is a `click.UsageError` (exit 2).

One module per command family: `serve`; `run` (with `chat`, one conversation; `repl`, the
``>>>`` loop, its `slash` commands and `history`; `images` in prompts; `display` of replies);
`models` (list, ps, show, stop, rm, cp, pull, push); `create`; `rpc_worker`; `help`. Output helpers:
`format`, `progress`, `show`. `OLLAMA_HOST` and the data folder are read by `power.location`.
"""

from __future__ import annotations

from typing import Any

import click

from power import __version__
from power.cli import create, models, rpc_worker, run, serve, service
from power.cli.client import Client, ConnectError, ResponseError
from power.cli.help import help_command
from power.cli.usage import usage

__all__ = ["main"]

_ALIASES = {"ls": "list", "start": "serve", "delete": "rm"}


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


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """Ollama's ``versionHandler``: the server's version, then the client's when they differ.

    The server reports Power's own version as ``power_version`` (its ``version`` is the Ollama
    API version it speaks); a server without that field reports Power's as ``version``.
    """
    if not value or ctx.resilient_parsing:
        return
    server_version = ""
    try:
        answer = Client.from_env().get("/api/version") or {}
        server_version = str(answer.get("power_version") or answer.get("version") or "")
    except (ConnectError, ResponseError):
        click.echo("Warning: could not connect to a running Power server")
    if server_version:
        click.echo(f"power version is {server_version}")
    if server_version != __version__:
        click.echo(f"Warning: client version is {__version__}")
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


for _command in (serve.serve, run.run, *models.COMMANDS, create.create, rpc_worker.rpc_worker):
    main.add_command(_command)
main.add_command(usage)
main.add_command(service.service)
main.add_command(help_command)
