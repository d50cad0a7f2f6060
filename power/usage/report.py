"""The usage report: rows per day and model, priced at the prices configured now.

Cost is computed when asked, not stored: ``[pricing]`` in config.toml says what local inference
would cost at a cloud price, and changing it reprices the whole history. Prompt tokens (cached
ones included) are priced as input, completion tokens as output; costs are rounded to 1e-9
dollars. ``/v1/usage`` answers this body and ``power usage`` prints it as a table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from power.settings import Price
from power.usage.db import Usage

__all__ = ["COST_DIGITS", "report"]

COST_DIGITS = 9


def _totals(requests: int, prompt: int, completion: int, cost: float) -> dict[str, Any]:
    return {
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": round(cost, COST_DIGITS),
    }


def report(rows: Sequence[Usage], price_of: Callable[[str], Price]) -> dict[str, Any]:
    """``{"data": [one per day and model], "total": {...}}``, the ``/v1/usage`` body."""
    costs = [price_of(r.model).cost(r.prompt_tokens, r.completion_tokens) for r in rows]
    data = [
        {"date": r.day, "model": r.model, **_totals(*_counts(r), cost)}
        for r, cost in zip(rows, costs, strict=True)
    ]
    total = _totals(
        sum(r.requests for r in rows),
        sum(r.prompt_tokens for r in rows),
        sum(r.completion_tokens for r in rows),
        math.fsum(costs),
    )
    return {"data": data, "total": total}


def _counts(row: Usage) -> tuple[int, int, int]:
    return row.requests, row.prompt_tokens, row.completion_tokens
