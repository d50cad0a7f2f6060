"""``python -m power serve`` as a real child process on a free loopback port."""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def runner_pids(self) -> list[int]:
        try:
            return [
                c.pid
                for c in psutil.Process(self.proc.pid).children(recursive=True)
                if c.status() != psutil.STATUS_ZOMBIE
            ]
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("HEAD", "/")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def power_server(env: dict[str, str], log: Path, *args: str) -> Iterator[Server]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "power", "serve", "--port", str(port), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, port, log)
    try:
        deadline = time.monotonic() + 30
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{server.log_text()}")
            time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def shared_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the session, so the starter model is imported once."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def server_env(clean_env: dict[str, str], shared_models: Path) -> dict[str, str]:
    env = dict(clean_env)
    env["OLLAMA_MODELS"] = str(shared_models)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def server(server_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    with power_server(server_env, tmp_path / "server.log") as srv:
        yield srv


MODEL = "fuzz"  # the limited server's model: smollm2's weights, a plain Go template
BODY_LIMIT = 1 << 20  # the limited server's A3S_POWER_MAX_BODY_SIZE
PLAIN = "{{ if .System }}{{ .System }} {{ end }}{{ range .Messages }}{{ .Content }} {{ end }}"


@pytest.fixture
def limited_server(server_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    """A server on the fake echo engine with a 1 MiB body limit and the model ``fuzz``."""
    env = dict(
        server_env, A3S_POWER_RUNNER_ENGINE="fake:echo", A3S_POWER_MAX_BODY_SIZE=str(BODY_LIMIT)
    )
    with power_server(env, tmp_path / "server.log") as srv:
        body = {"model": MODEL, "from": "smollm2", "template": PLAIN, "stream": False}
        resp = httpx.post(f"{srv.url}/api/create", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        yield srv
