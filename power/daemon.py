"""The daemons on a data folder: their pid files, and stopping them gracefully.

Every ``power serve`` (the one ``power run`` starts in the background, a service, one started by
hand) records itself under the data folder once it listens, and removes its record when it exits
cleanly. The first records itself in ``<home>/server.pid``. Like Ollama, which lets several
servers share one ``~/.ollama`` on different ports (one per GPU, say), a second daemon on the same
data folder is not refused: it records itself beside the first, in ``server-<pid>.pid``, so
``power service status`` and ``stop`` still find it once the first has gone. A record holds the
pid and the process's start time, so a pid the kernel has since given to another process is not
mistaken for a daemon; a record whose process is gone is stale and ignored (and replaced or
removed by the next daemon). Records are written and removed under a lock on the data folder
(``flock``), so two daemons starting at once cannot both take ``server.pid``.

Stopping sends SIGTERM, which ``power serve`` answers with its shutdown order (refuse new work,
let requests in flight finish within ``shutdown_grace_s``, then the runner stop ladder), and
waits for the process to exit. Under systemd the daemon also tells the service manager how long
that takes (`notify_stopping`), so the unit's ``TimeoutStopSec`` cannot cut it short.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import signal
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import psutil

__all__ = [
    "PID_FILE",
    "Daemon",
    "all_running",
    "forget",
    "notify_stopping",
    "pid_path",
    "record",
    "running",
    "stop",
    "terminate",
    "wait_exited",
]

log = logging.getLogger(__name__)

PID_FILE = "server.pid"
_BESIDE = "server-*.pid"  # the records of daemons started beside the first
# Start times are compared with this slack: psutil derives them from clock ticks since boot.
_START_SLACK_S = 1.0
_POLL_S = 0.1
_MAX_USEC = 2**64 - 2  # systemd's largest finite time span


class Daemon(NamedTuple):
    """A live daemon, as its pid file names it."""

    pid: int
    started: float  # psutil's create_time: seconds since the epoch


def pid_path(home: Path) -> Path:
    return Path(home) / PID_FILE


def _beside_path(home: Path, pid: int) -> Path:
    return Path(home) / f"server-{pid}.pid"


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


def _records(home: Path) -> Iterator[tuple[Path, Daemon | None]]:
    """Every record under ``home``: ``server.pid`` first, then the others oldest first."""
    yield pid_path(home), _read(pid_path(home))
    beside = [(path, _read(path)) for path in Path(home).glob(_BESIDE)]
    beside.sort(key=lambda item: (item[1] is None, item[1].started if item[1] else 0.0))
    yield from beside


def all_running(home: Path) -> list[Daemon]:
    """The live daemons recorded under ``home``, the one in ``server.pid`` first."""
    found: list[Daemon] = []
    for _, daemon in _records(home):
        if daemon is not None and daemon not in found and _alive(daemon):
            found.append(daemon)
    return found


def running(home: Path) -> Daemon | None:
    """The live daemon recorded under ``home`` (``server.pid``'s, or else the oldest other);
    None when there is none or every record is stale."""
    daemons = all_running(home)
    return daemons[0] if daemons else None


def _me() -> Daemon:
    return Daemon(os.getpid(), psutil.Process().create_time())


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """The data folder locked (``flock`` on the folder itself: no lock file to leave behind)."""
    fd = os.open(home, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (releases the lock)


def _write(path: Path, daemon: Daemon) -> None:
    """Write ``daemon`` to ``path`` atomically: a reader sees the old file or the new, never half
    of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{PID_FILE}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{daemon.pid} {daemon.started!r}\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def record(home: Path) -> Daemon | None:
    """Record this process under ``home``: in ``server.pid`` when no other live daemon holds it
    (returns None), or else beside it (returns that other daemon). Stale records of daemons
    started beside the first are removed."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    me = _me()
    with _locked(home):
        for path in home.glob(_BESIDE):
            daemon = _read(path)
            if daemon is None or (daemon.pid != me.pid and not _alive(daemon)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        first = _read(pid_path(home))
        if first is not None and first.pid != me.pid and _alive(first):
            _write(_beside_path(home, me.pid), me)
            return first
        _write(pid_path(home), me)
    return None


def forget(home: Path) -> None:
    """Remove this process's record (another daemon's stays)."""
    home = Path(home)
    pid = os.getpid()
    with contextlib.suppress(FileNotFoundError), _locked(home):
        for path in (pid_path(home), _beside_path(home, pid)):
            daemon = _read(path)
            if daemon is not None and daemon.pid == pid:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def terminate(daemon: Daemon) -> bool:
    """SIGTERM ``daemon``; False when it had already exited. Raises ``PermissionError`` when it
    belongs to another user."""
    if not _alive(daemon):
        return False
    try:
        os.kill(daemon.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def wait_exited(daemons: list[Daemon], timeout_s: float) -> list[Daemon]:
    """Wait up to ``timeout_s`` for ``daemons`` to exit; returns those still running. Exited
    means gone or a zombie (its parent, not us, reaps it)."""
    deadline = time.monotonic() + timeout_s
    while left := [d for d in daemons if _alive(d)]:
        if time.monotonic() >= deadline:
            return left
        time.sleep(_POLL_S)
    return []


def stop(daemon: Daemon, timeout_s: float) -> bool:
    """SIGTERM ``daemon`` and wait up to ``timeout_s`` for it to exit; False if it still runs.
    Raises ``PermissionError`` when the daemon belongs to another user."""
    return not terminate(daemon) or not wait_exited([daemon], timeout_s)


def notify_stopping(stop_s: float, environ: Mapping[str, str]) -> bool:
    """Tell systemd that this daemon is stopping and may take ``stop_s`` to exit; False when
    it cannot be told (no ``$NOTIFY_SOCKET``: not a service, or a unit without
    ``NotifyAccess=``).

    ``EXTEND_TIMEOUT_USEC`` moves the unit's stop deadline to ``stop_s`` from now when that is
    later than its ``TimeoutStopSec``: the time `power service install` wrote is then a floor,
    and a ``shutdown_grace_s`` raised in config.toml afterwards still gets its drain.
    """
    address = environ.get("NOTIFY_SOCKET", "")
    if not address.startswith(("/", "@")):
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    usec = _MAX_USEC if not math.isfinite(stop_s) else min(math.ceil(stop_s * 1e6), _MAX_USEC)
    message = f"STOPPING=1\nEXTEND_TIMEOUT_USEC={usec}".encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message, address)
    except OSError as exc:
        log.warning("cannot tell systemd that the stop takes up to %gs: %s", stop_s, exc)
        return False
    return True
