"""`power help [COMMAND]`: the help of the CLI or of one command, as ``ollama help`` prints it."""

from __future__ import annotations

from collections.abc import Sequence

import click

__all__ = ["help_command"]


@click.command("help")
@click.argument("command", nargs=-1)
@click.pass_context
def help_command(ctx: click.Context, command: Sequence[str]) -> None:
    """Help about any command."""
    parent = ctx.parent
    if parent is None:  # invoked on its own, outside the `power` group
        click.echo(ctx.get_help())
        return
    target: click.Command = parent.command
    target_ctx = parent
    for name in command:
        found = target.get_command(target_ctx, name) if isinstance(target, click.Group) else None
        if found is None:
            raise click.UsageError(f'unknown help topic "{" ".join(command)}"')
        target_ctx = click.Context(found, info_name=name, parent=target_ctx)
        target = found
    click.echo(target.get_help(target_ctx))
