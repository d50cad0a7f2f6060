"""Several daemons on one data folder (as several `ollama serve` on one ~/.ollama, each on its
own port): each is recorded, so `power service status` and `stop` find every one still running,
also after the first has exited."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil

from power import daemon
from power.daemon import Daemon
from tests.support.cli import power_cli

# A stand-in for `power serve`: records itself, says whom it found recorded before it, and
# forgets itself when its stdin closes or on SIGTERM (then exits 0).
CHILD = """
import signal, sys
from pathlib import Path
from power import daemon
home = Path(sys.argv[1])
def bye(*_):
    daemon.forget(home)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
other = daemon.record(home)
print(other.pid if other else 0, flush=True)
sys.stdin.readline()
bye()
"""


@contextmanager
def serving(home: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A recorded stand-in daemon and the pid of the one it found recorded (0: none)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        yield child, int(child.stdout.readline())
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()


def exit_cleanly(child: subprocess.Popen[bytes]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    assert child.wait(30) == 0


def me(child: subprocess.Popen[bytes]) -> Daemon:
    return Daemon(child.pid, psutil.Process(child.pid).create_time())


power = power_cli


def test_the_second_daemon_is_still_found_after_the_first_exits(
    clean_env: dict[str, str],
) -> None:
    home = Path(clean_env["A3S_POWER_HOME"])
    with serving(home) as (one, none), serving(home) as (two, found):
        assert (none, found) == (0, one.pid)  # the second is told of the first
        assert daemon.running(home) == me(one)  # the first stays the one in server.pid
        assert daemon.all_running(home) == [me(one), me(two)]
        exit_cleanly(one)
        assert daemon.running(home) == me(two)
        status = power(clean_env, "service", "status")
        assert status.returncode == 0, status.stderr
        assert f"daemon: pid {two.pid} on {home}" in status.stdout.splitlines()
        stopped = power(clean_env, "service", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.splitlines()[-1] == "stopped"
        assert two.wait(30) == 0  # SIGTERM'd, and it exited cleanly
    assert daemon.all_running(home) == []
    assert list(home.iterdir()) == []  # every record removed by its owner


def test_status_lists_and_stop_stops_every_daemon_on_the_data_folder(
    clean_env: dict[str, str],
) -> None:
    home = Path(clean_env["A3S_POWER_HOME"])
    with ExitStack() as stack:
        children = [stack.enter_context(serving(home))[0] for _ in range(3)]
        status = power(clean_env, "service", "status").stdout.splitlines()
        assert [f"daemon: pid {c.pid} on {home}" for c in children] == status[-3:]
        stopped = power(clean_env, "service", "stop")
        assert stopped.returncode == 0, stopped.stderr
        pids = ", ".join(str(c.pid) for c in children)
        assert stopped.stdout.startswith(f"stopping the Power daemons (pids {pids});")
        assert [c.wait(30) for c in children] == [0, 0, 0]
    again = power(clean_env, "service", "stop")
    assert again.stderr == f"Error: no Power daemon is running on {home}\n"


def test_a_stale_record_beside_the_first_is_ignored_and_cleared(tmp_path: Path) -> None:
    beside = tmp_path / "server-12345.pid"
    beside.write_text("12345 12345.0\n")  # a daemon that crashed long ago
    assert daemon.running(tmp_path) is None
    with serving(tmp_path) as (child, found):
        assert found == 0
        assert daemon.all_running(tmp_path) == [me(child)]
        assert not beside.exists()
        exit_cleanly(child)
