"""``python -m power serve`` as a real child process on a free loopback port."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.support.net import free_port
from tests.support.wait import wait_until

__all__ = ["Server", "post", "power_server", "runner_children", "upload"]


def runner_children(gateway_pid: int) -> list[psutil.Process]:
    """The gateway's live runner processes (``python -m runner``), not its other children (the
    chat-template workers). One that ends while they are read is left out."""
    try:
        children = psutil.Process(gateway_pid).children()
    except psutil.NoSuchProcess:
        return []
    runners = []
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.status() != psutil.STATUS_ZOMBIE and child.cmdline()[1:3] == ["-m", "runner"]:
                runners.append(child)
    return runners


START_TIMEOUT_S = 30.0


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def runner_pids(self) -> list[int]:
        """The pids of the server's live runners (``runner_children``)."""
        return [p.pid for p in runner_children(self.proc.pid)]

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
def _hangup_as_a_terminal_gives_it() -> Iterator[None]:
    """SIGHUP at its default while the server starts: a server started from a shell under
    ``nohup`` inherits it ignored and rightly keeps it so (power.serve), and the tests of a
    hangup would then depend on how the suite was launched."""
    if threading.current_thread() is not threading.main_thread():  # (signal.signal: main only)
        yield
        return
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


@contextlib.contextmanager
def power_server(env: dict[str, str], log: Path, *args: str) -> Iterator[Server]:
    """The server, once it answers HTTP; on exit SIGTERM (then SIGKILL) and reap it."""
    port = free_port()
    with log.open("wb") as out, _hangup_as_a_terminal_gives_it():
        proc = subprocess.Popen(
            [sys.executable, "-m", "power", "serve", "--port", str(port), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, port, log)
    try:
        try:
            wait_until(lambda: proc.poll() is not None or _answers(port), START_TIMEOUT_S, 0.05)
        except AssertionError:
            raise AssertionError(f"server did not start:\n{server.log_text()}") from None
        if proc.poll() is not None:
            raise AssertionError(f"server did not start:\n{server.log_text()}")
        yield server
    finally:
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def post(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    """A JSON POST with time for a real model to answer."""
    return httpx.post(f"{server.url}{path}", json=body, timeout=110)


def upload(server: Server, path: Path) -> str:
    """Upload a local file as a blob (as clients do before a create); returns its digest."""
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    resp = httpx.post(f"{server.url}/api/blobs/{digest}", content=path.read_bytes(), timeout=60)
    assert resp.status_code in (200, 201), resp.text
    return digest
