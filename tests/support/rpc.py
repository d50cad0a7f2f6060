"""``power rpc-worker`` (llama.cpp's RPC server) as a real child process on a free loopback port."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import free_port
from tests.support.wait import wait_until

__all__ = ["Worker", "rpc_worker"]

START_TIMEOUT_S = 60.0


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def rpc_worker(
    env: dict[str, str], log: Path, threads: int = 1, mem: str | None = None
) -> Iterator[Worker]:
    """A worker (offering at most ``mem`` when given) once its port accepts connections; on
    exit it is killed (the RPC server has no graceful stop) and reaped."""
    port = free_port()
    argv = [sys.executable, "-m", "power", "rpc-worker", "--port", str(port)]
    argv += ["--mem", mem] if mem else []
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--threads", str(threads)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = Worker(proc, port, log)
    try:
        wait_until(lambda: proc.poll() is not None or _listening(port), START_TIMEOUT_S, 0.05)
        if proc.poll() is not None:
            raise AssertionError(f"rpc-worker did not start:\n{worker.log_text()}")
        yield worker
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
