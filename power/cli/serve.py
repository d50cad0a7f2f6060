"""`power serve` (alias `start`): run the server; `--help` lists the environment variables."""

from __future__ import annotations

import sys
from typing import Any

import click

from power.location import DEFAULT_HOST, DEFAULT_PORT

__all__ = ["serve"]


class _ServeCommand(click.Command):
    """Lists the environment variables in `serve --help` (imported only when asked)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from power.environment import env_help

        with formatter.section("Environment Variables"):
            formatter.write_dl(env_help())


@click.command(cls=_ServeCommand)
@click.option("--host", default=None, help=f"Address to listen on (default {DEFAULT_HOST}).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help=f"Port ({DEFAULT_PORT}).")
@click.option("--models", default=None, help="Path to the models directory.")
@click.option("--keep-alive", default=None, help="How long models stay loaded (e.g. 5m).")
@click.option("--context-length", type=click.IntRange(min=0), default=None)
@click.option("--max-loaded-models", type=click.IntRange(min=0), default=None)
@click.option("--num-parallel", type=click.IntRange(min=0), default=None)
@click.option("--origins", multiple=True, help="Extra allowed CORS origin (repeatable).")
@click.option("--debug", is_flag=True, default=None, help="Log at DEBUG level.")
def serve(**flags: Any) -> None:
    """Start the server (alias: start)."""
    from power.serve import ListenError, run_server
    from power.settings import ConfigError

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
