"""The daemon on a data folder: its pid file, and stopping it gracefully.

Every ``power serve`` (the one ``power run`` starts in the background, a service, one started by
hand) records itself in ``<home>/server.pid`` once it listens, and removes the file when it
exits cleanly. The file holds the pid and the process's start time, so a pid the kernel has since
given to another process is not mistaken for the daemon; a file whose process is gone is stale
and ignored (and replaced by the next daemon). When a live daemon already holds the file, a second
one on the same data folder leaves it alone: ``power service stop`` stops the first.

Stopping sends SIGTERM, which ``power serve`` answers with its shutdown order (refuse new work,
let requests in flight finish within ``shutdown_grace_s``, then the runner stop ladder), and
waits for the process to exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import psutil

__all__ = ["PID_FILE", "Daemon", "forget", "pid_path", "record", "running", "stop"]

log = logging.getLogger(__name__)

PID_FILE = "server.pid"
# Start times are compared with this slack: psutil derives them from clock ticks since boot.
_START_SLACK_S = 1.0
_POLL_S = 0.1


class Daemon(NamedTuple):
    """A live daemon, as its pid file names it."""

    pid: int
    started: float  # psutil's create_time: seconds since the epoch


def pid_path(home: Path) -> Path:
    return Path(home) / PID_FILE


def _read(path: Path) -> Daemon | None:
    try:
        pid_text, started_text = path.read_text().split()
        return Daemon(int(pid_text), float(started_text))
    except (OSError, ValueError):
        return None


def _alive(daemon: Daemon) -> bool:
    """True when ``daemon.pid`` is still the process that wrote the file (not a reused pid)."""
    try:
        proc = psutil.Process(daemon.pid)
        return (
            abs(proc.create_time() - daemon.started) < _START_SLACK_S
            and proc.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def running(home: Path) -> Daemon | None:
    """The live daemon recorded under ``home``; None when there is none or the file is stale."""
    daemon = _read(pid_path(home))
    return daemon if daemon is not None and _alive(daemon) else None


def _me() -> Daemon:
    return Daemon(os.getpid(), psutil.Process().create_time())


def record(home: Path) -> Daemon | None:
    """Write this process into the pid file (atomically: a reader sees the old file or the new,
    never half of one). Returns the other live daemon instead, leaving its file, if one holds it."""
    other = running(home)
    if other is not None and other.pid != os.getpid():
        return other
    path = pid_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = _me()
    fd, tmp = tempfile.mkstemp(prefix=f".{PID_FILE}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{me.pid} {me.started!r}\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return None


def forget(home: Path) -> None:
    """Remove the pid file if it names this process (another daemon's stays)."""
    path = pid_path(home)
    daemon = _read(path)
    if daemon is not None and daemon.pid == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def stop(daemon: Daemon, timeout_s: float) -> bool:
    """SIGTERM ``daemon`` and wait up to ``timeout_s`` for it to exit; False if it still runs.

    Exited means gone or a zombie (its parent, not us, reaps it). Raises ``PermissionError``
    when the daemon belongs to another user.
    """
    if not _alive(daemon):
        return True
    try:
        os.kill(daemon.pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout_s
    while _alive(daemon):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True
