"""The pid file under the data folder: written whole, ignored when stale, removed only by its
owner; and stopping the process it names with SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from power import daemon
from power.daemon import Daemon

# A child that exits 0 on SIGTERM (as `power serve` does once drained) and answers each line.
GRACEFUL = (
    "import signal, sys\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "print('ready', flush=True)\n"
    "for line in sys.stdin:\n"
    "    print('pong', flush=True)\n"
)


def start(code: str = GRACEFUL) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    return child


def answers(child: subprocess.Popen[bytes]) -> bool:
    """True when the child still answers: it was sent no SIGTERM (the signal, sent before
    the line, would have ended it before it read the line)."""
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.write(b"ping\n")
    child.stdin.flush()
    return child.stdout.readline() == b"pong\n"


def test_record_writes_this_process_and_forget_removes_it(tmp_path: Path) -> None:
    assert daemon.running(tmp_path) is None
    assert daemon.record(tmp_path) is None
    me = daemon.running(tmp_path)
    assert me is not None
    assert me.pid == os.getpid()
    assert abs(me.started - psutil.Process().create_time()) < 1
    assert [p.name for p in tmp_path.iterdir()] == ["server.pid"]  # no temporary file left
    daemon.forget(tmp_path)
    assert not daemon.pid_path(tmp_path).exists()


def test_a_stale_file_is_ignored_and_replaced(tmp_path: Path) -> None:
    path = daemon.pid_path(tmp_path)
    # this pid, but another start time: the pid was reused, the daemon is gone
    path.write_text(f"{os.getpid()} 12345.0\n")
    assert daemon.running(tmp_path) is None
    path.write_text("garbage")
    assert daemon.running(tmp_path) is None
    assert daemon.record(tmp_path) is None
    recorded = daemon.running(tmp_path)
    assert recorded is not None
    assert recorded.pid == os.getpid()


def test_a_live_daemon_keeps_its_file(tmp_path: Path) -> None:
    with start() as child:
        try:
            other = Daemon(child.pid, psutil.Process(child.pid).create_time())
            daemon.pid_path(tmp_path).write_text(f"{other.pid} {other.started!r}\n")
            assert daemon.running(tmp_path) == other
            assert daemon.record(tmp_path) == other  # not overwritten
            daemon.forget(tmp_path)  # not ours to remove
            assert daemon.running(tmp_path) == other
        finally:
            child.kill()


def test_stop_sends_sigterm_and_waits_for_the_exit() -> None:
    with start() as child:
        target = Daemon(child.pid, psutil.Process(child.pid).create_time())
        assert daemon.stop(target, timeout_s=30) is True
        assert child.wait(5) == 0  # it exited on SIGTERM, cleanly


def test_stop_gives_up_after_the_timeout_on_a_daemon_that_does_not_exit() -> None:
    deaf = GRACEFUL.replace("lambda *_: sys.exit(0)", "signal.SIG_IGN")
    with start(deaf) as child:
        try:
            target = Daemon(child.pid, psutil.Process(child.pid).create_time())
            assert daemon.stop(target, timeout_s=0.3) is False
            assert answers(child)
        finally:
            child.kill()


def test_stop_of_a_reused_pid_signals_nothing() -> None:
    with start() as child:
        try:
            assert daemon.stop(Daemon(child.pid, 12345.0), timeout_s=5) is True
            assert answers(child)  # it was not the recorded daemon
        finally:
            child.kill()
