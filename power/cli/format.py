"""Pure formatting for the CLI: sizes, durations, relative times, tables and timings.

Each function mirrors the output of Ollama's ``format`` package so that scripts written
against ``ollama ls`` / ``ollama ps`` keep working.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

__all__ = [
    "go_duration",
    "go_float32_json",
    "human_bytes",
    "human_duration",
    "human_number",
    "human_time",
    "parse_time",
    "processor",
    "render_table",
    "timings",
]

_UNITS = (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("KB", 1000))
_FAR_FUTURE_YEARS = 20


def human_bytes(n: int | float) -> str:
    """Decimal units like Ollama: ``98 MB``, ``4.7 GB``, ``512 B``."""
    n = int(n)
    for unit, scale in _UNITS:
        if n >= scale:
            value = n / scale
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{n} B"


def human_number(n: int) -> str:
    """Parameter counts: ``494.0M`` style (``3B``, ``1.2B``, ``135M``)."""
    for unit, scale in (("B", 1_000_000_000), ("M", 1_000_000), ("K", 1000)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f}{unit}" if value == math.floor(value) else f"{value:.1f}{unit}"
    return str(n)


def human_duration(delta: timedelta) -> str:
    """Ollama's ``HumanDuration``: ``Less than a second``, ``4 minutes``, ``3 days``."""
    seconds = int(delta.total_seconds())
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(delta.total_seconds() / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(delta.total_seconds() / 3600 / 24 / 365)} years"


def parse_time(text: object) -> datetime | None:
    """Parse an RFC 3339 timestamp from the API; None when absent or the Go zero time."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.year <= 1:
        return None
    return value if value.tzinfo else value.astimezone()


def human_time(when: datetime | None, now: datetime, *, zero: str = "Never") -> str:
    """``2 minutes ago``, ``4 minutes from now``, ``Forever`` for far-future times."""
    if when is None:
        return zero
    delta = now - when
    if delta < timedelta(days=-365 * _FAR_FUTURE_YEARS):
        return "Forever"
    if delta < timedelta(0):
        return f"{human_duration(-delta)} from now"
    return f"{human_duration(delta)} ago"


def processor(size: int, size_vram: int) -> str:
    """The PROCESSOR column of ``ps``: ``100% GPU``, ``100% CPU`` or ``48%/52% CPU/GPU``."""
    if size_vram <= 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size <= 0:
        return "Unknown"
    cpu = round((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, pad: int = 4) -> str:
    """Left-aligned columns separated by ``pad`` spaces, no borders (Ollama's tablewriter)."""
    all_rows = [list(headers), *[list(r) for r in rows]] if headers else [list(r) for r in rows]
    if not all_rows:
        return ""
    ncols = max(len(r) for r in all_rows)
    widths = [max(len(r[i]) if i < len(r) else 0 for r in all_rows) for i in range(ncols)]
    lines = []
    for row in all_rows:
        cells = [row[i].ljust(widths[i]) if i < len(row) else "" for i in range(ncols)]
        lines.append((" " * pad).join(cells).rstrip())
    return "\n".join(lines) + "\n"


def go_duration(ns: int) -> str:
    """Format nanoseconds like Go's ``time.Duration.String`` (``1.5s``, ``41ms``, ``2m3.1s``)."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_trim(ns / 1_000)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_trim(ns / 1_000_000)}ms"
    hours, rem = divmod(ns, 3600 * 1_000_000_000)
    minutes, rem = divmod(rem, 60 * 1_000_000_000)
    out = sign
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + f"{_trim(rem / 1_000_000_000)}s"


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def timings(stats: Mapping[str, Any]) -> str:
    """The ``--verbose`` summary printed after a reply, from a final chunk's metrics."""
    lines = []
    total, load = int(stats.get("total_duration") or 0), int(stats.get("load_duration") or 0)
    if total > 0:
        lines.append(f"total duration:       {go_duration(total)}")
    if load > 0:
        lines.append(f"load duration:        {go_duration(load)}")
    for prefix, label in (("prompt_eval", "prompt eval"), ("eval", "eval")):
        count = int(stats.get(f"{prefix}_count") or 0)
        duration = int(stats.get(f"{prefix}_duration") or 0)
        if count > 0:
            lines.append(f"{label + ' count:':<22}{count} token(s)")
        if duration > 0:
            lines.append(f"{label + ' duration:':<22}{go_duration(duration)}")
            lines.append(f"{label + ' rate:':<22}{count / (duration / 1e9):.2f} tokens/s")
    return "\n".join(lines) + ("\n" if lines else "")


def _f32(value: float) -> bytes:
    return struct.pack("<f", value)


def _go_float32(value: float) -> str:
    """One float32 as Go's encoding/json writes it: the shortest digits that read back as the
    same float32, fixed-point unless tiny or huge (``1e-7``, never ``1e-07``)."""
    bits = _f32(value)
    short = f"{value:.9g}"
    for precision in range(1, 10):
        candidate = f"{value:.{precision}g}"
        if _f32(float(candidate)) == bits:
            short = candidate
            break
    magnitude = abs(float(short))
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        digits = len(Decimal(short).normalize().as_tuple().digits)
        text = f"{float(short):.{digits - 1}e}"
        if text[-3:-1] == "-0":  # Go's cleanup of a one-digit negative exponent
            text = text[:-2] + text[-1]
        return text
    return format(Decimal(short), "f")


def go_float32_json(values: Sequence[float]) -> str:
    """A ``[]float32`` as Go's ``json.Marshal`` prints it (``ollama run`` on an embedding model)."""
    return "[" + ",".join(_go_float32(float(v)) for v in values) + "]"
