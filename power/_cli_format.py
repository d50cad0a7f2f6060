"""Pure formatting for the CLI: sizes, durations, relative times, tables and progress lines.

Each function mirrors the output of Ollama's ``format`` and ``progress`` packages so that
scripts written against ``ollama ls`` / ``ollama ps`` keep working.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "Progress",
    "Spinner",
    "go_duration",
    "human_bytes",
    "human_duration",
    "human_number",
    "human_time",
    "parse_time",
    "processor",
    "render_bar",
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


def render_bar(
    message: str,
    completed: int,
    total: int,
    *,
    rate_bps: float = 0.0,
    done: bool = False,
    width: int = 80,
) -> str:
    """One progress line: ``pulling 6f2a91c0d3e4:  45% ▕████    ▏ 2.1 GB/4.7 GB  50 MB/s  52s``."""
    percent = min(100.0, completed / total * 100) if total > 0 else 0.0
    pre = f"{message} {percent:3.0f}%"
    if done:
        suffix = human_bytes(total).rjust(6) + " " * 7 + " " * 10 + " " * 8
    else:
        suffix = human_bytes(completed).rjust(6) + "/" + human_bytes(total).ljust(6)
        if rate_bps > 0:
            remaining_s = int(max(0, total - completed) / rate_bps)
            suffix += "  " + human_bytes(rate_bps).rjust(6) + "/s"
            suffix += "  " + go_duration(remaining_s * 1_000_000_000).rjust(6)
        else:
            suffix += " " * 18
    free = max(0, width - len(pre) - len(suffix) - 5)
    filled = int(free * percent / 100)
    return f"{pre} ▕{'█' * filled}{' ' * (free - filled)}▏ {suffix}".rstrip()


SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_REDRAW_S = 0.1
_RATE_WINDOW_S = 5.0


@dataclass
class _Entry:
    message: str
    total: int = 0
    completed: int = 0
    is_bar: bool = False
    stopped: bool = False
    printed: bool = False
    samples: list[tuple[float, int]] = field(default_factory=list)

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


class Progress:
    """Renders pull/push/create status events, one line per layer or status.

    On a terminal the block is redrawn in place (at most every 100 ms); otherwise each
    status is written once when it starts and each layer once when it completes.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        tty: bool,
        width: int = 80,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write, self._tty, self._width, self._clock = write, tty, width, clock
        self._entries: dict[str, _Entry] = {}
        self._status: _Entry | None = None
        self._drawn = 0
        self._last_draw = -math.inf
        self._frame = 0

    def update(self, event: Mapping[str, Any]) -> None:
        status = str(event.get("status") or "")
        digest = str(event.get("digest") or "")
        now = self._clock()
        if digest and event.get("total"):
            entry = self._entries.get(digest)
            if entry is None:
                self._stop_status()
                entry = self._entries[digest] = _Entry(status, is_bar=True)
            entry.total = int(event["total"])
            entry.completed = int(event.get("completed") or 0)
            entry.samples = [s for s in entry.samples if now - s[0] <= _RATE_WINDOW_S]
            entry.samples.append((now, entry.completed))
            if entry.completed >= entry.total:
                entry.stopped = True
        elif status and (self._status is None or self._status.message != status):
            self._stop_status()
            self._status = self._entries[f"status:{len(self._entries)}"] = _Entry(status)
        self._render(force=not self._tty or now - self._last_draw >= _REDRAW_S, now=now)

    def finish(self) -> None:
        self._stop_status()
        for entry in self._entries.values():
            entry.stopped = True
        self._render(force=True, now=self._clock())

    def _stop_status(self) -> None:
        if self._status is not None:
            self._status.stopped = True
            self._status = None

    def _line(self, entry: _Entry) -> str:
        if entry.is_bar:
            return render_bar(
                entry.message,
                entry.completed,
                entry.total,
                rate_bps=entry.rate(),
                done=entry.stopped,
                width=self._width,
            )
        if entry.stopped or not self._tty:
            return entry.message
        return f"{entry.message} {SPINNER_FRAMES[self._frame % len(SPINNER_FRAMES)]}"

    def _render(self, *, force: bool, now: float) -> None:
        if not force:
            return
        self._last_draw = now
        if not self._tty:
            for entry in self._entries.values():
                if not entry.printed and (entry.stopped or not entry.is_bar):
                    entry.printed = True
                    self._write(self._line(entry) + "\n")
            return
        out = f"\x1b[{self._drawn}A" if self._drawn else ""
        out += "".join(f"\r\x1b[K{self._line(e)}\n" for e in self._entries.values())
        self._frame += 1
        self._drawn = len(self._entries)
        self._write(out)


class Spinner:
    """A background spinner on a terminal stream, e.g. while a model loads."""

    def __init__(self, write: Callable[[str], None], message: str = "") -> None:
        self._write, self._message = write, message
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="power-spinner", daemon=True)

    def __enter__(self) -> Spinner:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._write("\r\x1b[K")

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(_REDRAW_S):
            glyph = SPINNER_FRAMES[frame % len(SPINNER_FRAMES)]
            self._write(f"\r{self._message}{' ' if self._message else ''}{glyph}")
            frame += 1


def _show_section(title: str, rows: Sequence[Sequence[str]]) -> str:
    body = render_table((), [["", *row] for row in rows])
    return f"  {title}\n{body}\n"


def _head(text: str, n: int) -> list[list[str]]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    rows = [[line] for line in lines[:n]]
    return [*rows, ["..."]] if len(lines) > n else rows


def _metadata_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        shown = " ".join(str(v) for v in value[:10])
        return f"[{shown}{' ...' if len(value) > 10 else ''}]"
    return str(value)


def _projector_rows(info: Mapping[str, Any]) -> list[list[str]]:
    arch = str(info.get("general.architecture", ""))
    rows = [["architecture", arch]]
    if isinstance(info.get("general.parameter_count"), int | float):
        rows.append(["parameters", human_number(int(info["general.parameter_count"]))])
    for label, key in (("embedding length", "embedding_length"), ("dimensions", "projection_dim")):
        if isinstance(info.get(f"{arch}.vision.{key}"), int | float):
            rows.append([label, str(int(info[f"{arch}.vision.{key}"]))])
    return rows


def render_show_info(resp: Mapping[str, Any], *, verbose: bool = False) -> str:
    """The default ``show`` view: Model, Capabilities, Projector, Parameters, System, License."""
    details: Mapping[str, Any] = resp.get("details") or {}
    info: Mapping[str, Any] = resp.get("model_info") or {}
    rows: list[list[str]] = []
    if info:
        arch = str(info.get("general.architecture", details.get("family", "")))
        params = str(details.get("parameter_size") or "")
        if not params and isinstance(info.get("general.parameter_count"), int | float):
            params = human_number(int(info["general.parameter_count"]))
        rows += [["architecture", arch], ["parameters", params]]
        for key in ("context_length", "embedding_length"):
            if isinstance(info.get(f"{arch}.{key}"), int | float):
                rows.append([key.replace("_", " "), str(int(info[f"{arch}.{key}"]))])
    else:
        rows += [["architecture", str(details.get("family", ""))]]
        rows += [["parameters", str(details.get("parameter_size", ""))]]
    rows.append(["quantization", str(details.get("quantization_level", ""))])
    out = _show_section("Model", rows)
    if resp.get("capabilities"):
        out += _show_section("Capabilities", [[str(c)] for c in resp["capabilities"]])
    projector: Mapping[str, Any] = resp.get("projector_info") or {}
    if projector:
        out += _show_section("Projector", _projector_rows(projector))
    if resp.get("parameters"):
        lines = str(resp["parameters"]).splitlines()
        out += _show_section("Parameters", [line.split() for line in lines if line.strip()])
    if verbose and info:
        meta = [[k, _metadata_value(info[k])] for k in sorted(info)]
        out += _show_section("Metadata", meta)
    if verbose and resp.get("tensors"):
        tensors = [
            [str(t.get("name", "")), str(t.get("type", "")), str(t.get("shape", ""))]
            for t in resp["tensors"]
        ]
        out += _show_section("Tensors", tensors)
    for title, key in (("System", "system"), ("License", "license")):
        if resp.get(key):
            out += _show_section(title, _head(str(resp[key]), 2))
    return out
