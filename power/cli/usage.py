"""`power usage`: the server's usage and cost table (``GET /v1/usage``), one row per day and
model and a total. The server checks the dates, so its 400 (naming the option) is the error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import click

from power.cli.client import Client
from power.cli.format import render_table

__all__ = ["usage"]

HEADERS = ["DATE", "MODEL", "REQUESTS", "PROMPT TOKENS", "COMPLETION TOKENS", "TOTAL TOKENS",
           "COST ($)"]  # fmt: skip


def _cells(row: Mapping[str, Any]) -> list[str]:
    counts = ("requests", "prompt_tokens", "completion_tokens", "total_tokens")
    return [*(str(row[key]) for key in counts), f"{float(row['cost']):.6f}"]


def render_usage(body: Mapping[str, Any]) -> str:
    """The ``/v1/usage`` body as a table, its total as the last row."""
    rows = [[str(r["date"]), str(r["model"]), *_cells(r)] for r in body["data"]]
    return render_table(HEADERS, [*rows, ["TOTAL", "", *_cells(body["total"])]])


@click.command()
@click.option("--start", metavar="YYYY-MM-DD", help="First day (UTC), inclusive.")
@click.option("--end", metavar="YYYY-MM-DD", help="Last day (UTC), inclusive.")
@click.option("--model", help="Only this model.")
def usage(start: str | None, end: str | None, model: str | None) -> None:
    """Show tokens and cost per day and model."""
    query = urlencode({k: v for k, v in (("start", start), ("end", end), ("model", model)) if v})
    body = Client.from_env().get("/v1/usage" + (f"?{query}" if query else ""))
    click.echo(render_usage(body), nl=False)
