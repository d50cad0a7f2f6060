"""Progress on the terminal: pull/push/create status lines and bars, and a load spinner.

The lines mirror Ollama's ``progress`` package.
"""

from __future__ import annotations

import math
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from power.cli.format import go_duration, human_bytes

__all__ = ["SPINNER_FRAMES", "Progress", "Spinner", "render_bar", "show_progress"]


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
    """A background spinner on a terminal stream, e.g. while a model loads.

    Use it as a context manager, or `start` it and `stop` it when the first output arrives;
    `stop` is idempotent and clears the spinner's line only if it was started.
    """

    def __init__(self, write: Callable[[str], None], message: str = "") -> None:
        self._write, self._message = write, message
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="power-spinner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if not self._thread.is_alive() or self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self._write("\r\x1b[K")

    def __enter__(self) -> Spinner:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(_REDRAW_S):
            glyph = SPINNER_FRAMES[frame % len(SPINNER_FRAMES)]
            self._write(f"\r{self._message}{' ' if self._message else ''}{glyph}")
            frame += 1


def show_progress(events: Iterable[Mapping[str, Any]]) -> None:
    """Render a pull/push/create stream on stderr."""
    stderr = sys.stderr
    progress = Progress(
        lambda text: click.echo(text, nl=False, err=True),
        tty=stderr.isatty(),
        width=shutil.get_terminal_size().columns,
    )
    try:
        for event in events:
            progress.update(event)
    finally:
        progress.finish()
