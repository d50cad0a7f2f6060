"""The background daemon: ``power run`` starts it, it records its pid and logs to a rotated
``server.log``, and ``power service stop`` stops it gracefully (a stream in flight finishes)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from power import daemon
from tests.support.cli import power_cli
from tests.support.net import free_port
from tests.support.server import power_server
from tests.support.wait import wait_until

PROMPT = " ".join(f"w{i}" for i in range(40))  # 40 tokens at 50 ms each: a 2 s stream


def power(
    env: dict[str, str], *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return power_cli(env, *args, timeout_s=timeout_s)


@pytest.fixture
def env(server_env: dict[str, str]) -> dict[str, str]:
    port = free_port()
    return dict(
        server_env,
        OLLAMA_HOST=f"127.0.0.1:{port}",
        A3S_POWER_RUNNER_ENGINE="fake:echo?delay=0.05",
    )


@contextlib.contextmanager
def background(env: dict[str, str]) -> Iterator[daemon.Daemon]:
    """``power run`` starts the daemon; whatever the test does, it is gone afterwards."""
    home = Path(env["A3S_POWER_HOME"])
    try:
        ran = power(env, "run", "smollm2", "hello there")
        assert ran.returncode == 0, ran.stderr
        recorded = daemon.running(home)
        assert recorded is not None
        yield recorded
    finally:  # also when the run failed after the daemon started: it is found by its record
        left = daemon.running(home)
        if left is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(left.pid, signal.SIGKILL)
        wait_until(lambda: daemon.running(home) is None, 30)


def test_power_run_records_the_daemon_and_service_stop_drains_it(env: dict[str, str]) -> None:
    home = Path(env["A3S_POWER_HOME"])
    url = "http://" + env["OLLAMA_HOST"]
    with background(env) as recorded:
        assert "serve" in psutil.Process(recorded.pid).cmdline()
        log = home / "logs" / "server.log"
        assert "A3S Power listening on" in log.read_text()

        lines: list[dict[str, Any]] = []
        first = threading.Event()

        def stream() -> None:
            body = {"model": "smollm2", "prompt": PROMPT, "raw": True}
            with httpx.stream("POST", f"{url}/api/generate", json=body, timeout=60) as r:
                for line in r.iter_lines():
                    lines.append(json.loads(line))
                    first.set()

        reader = threading.Thread(target=stream)
        reader.start()
        try:
            assert first.wait(30)
            stopped = power(env, "service", "stop")
        finally:
            reader.join(60)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.splitlines()[-1] == "stopped"
        assert lines[-1]["done"] is True  # the stream in flight finished
        assert "".join(x.get("response", "") for x in lines).split() == PROMPT.split()
        assert not psutil.pid_exists(recorded.pid) or (
            psutil.Process(recorded.pid).status() == psutil.STATUS_ZOMBIE
        )
        assert not daemon.pid_path(home).exists()  # removed at its clean exit
        assert "stopped" in log.read_text().splitlines()[-1]

    again = power(env, "service", "stop")
    assert again.returncode == 1
    assert again.stderr == f"Error: no Power daemon is running on {home}\n"


def test_a_stale_pid_file_is_replaced_and_stop_ignores_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    home = Path(env["A3S_POWER_HOME"])
    home.mkdir(parents=True)
    daemon.pid_path(home).write_text(f"{os.getpid()} 12345.0\n")  # a reused pid
    assert power(env, "service", "stop").returncode == 1
    with power_server(env, tmp_path / "server.log") as server:
        recorded = daemon.running(home)
        assert recorded is not None
        assert recorded.pid == server.proc.pid
        status = power(env, "service", "status")
        assert f"daemon: pid {server.proc.pid} on {home}" in status.stdout.splitlines()
        assert server.stop() == 0
    assert not daemon.pid_path(home).exists()


def test_a_second_daemon_on_the_data_folder_leaves_the_first_ones_record(
    env: dict[str, str], tmp_path: Path
) -> None:
    home = Path(env["A3S_POWER_HOME"])
    with power_server(env, tmp_path / "one.log") as one:
        with power_server(env, tmp_path / "two.log") as two:
            assert f"another daemon (pid {one.proc.pid})" in two.log_text()
            recorded = daemon.running(home)
            assert recorded is not None
            assert recorded.pid == one.proc.pid
            assert two.stop() == 0
        recorded = daemon.running(home)
        assert recorded is not None
        assert recorded.pid == one.proc.pid


def test_the_log_file_rotates_and_keeps_a_bounded_number(
    env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "logs" / "server.log"
    rotated = dict(
        env, A3S_POWER_LOG_FILE=str(log), A3S_POWER_LOG_MAX_BYTES="4096", A3S_POWER_LOG_BACKUPS="2"
    )
    with power_server(rotated, tmp_path / "stderr.log") as server:
        with httpx.Client(base_url=server.url) as client:
            for _ in range(200):  # an access-log line each, ~60 bytes: ~12 KB in all
                assert client.get("/api/version").status_code == 200
        wait_until(lambda: sorted(p.name for p in log.parent.iterdir()) == [
            "server.log", "server.log.1", "server.log.2"
        ])  # fmt: skip
        assert server.stop() == 0
    for path in log.parent.iterdir():
        assert path.stat().st_size <= 4096
    assert "GET /api/version 200" in (log.parent / "server.log.2").read_text()
    assert "stopped" in log.read_text()
    # nothing went to the stderr the process was started with after logging was set up
    assert "GET /api/version" not in server.log_text()
