"""Pull-through and the daemon's other requests: while pulls from a model source that never
answers stall, requests that need only the local store (tags, ps, metrics, a show or generate
of a local model) still answer at once, however many requests wait for pulls.

Those waits once parked worker threads: ``/api/show`` and ``/api/create`` on the loop's default
executor, which the pulls themselves need (so the daemon stopped answering for good), and
generate on the lookup pool, which local lookups share (so they waited for the stall to end).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from power.registry.client import STALL_TIMEOUT_S
from tests.support.fleet import FLEET_MODELS
from tests.support.server import Server, power_server
from tests.support.wait import wait_until

# The daemon's default executor, and its lookup pool: min(32, CPUs + 4) threads each
THREADS = min(32, (os.cpu_count() or 1) + 4)
WAITING = THREADS + 6  # requests for models the daemon lacks, at once: 12 on two CPUs
# A local request must answer well before a stalled pull gives up (the registry client's stall
# timeout), which would free what waited for it and hide the wait.
WITHIN_S = STALL_TIMEOUT_S / 2
LOCAL = FLEET_MODELS[0]


class Blackhole:
    """A model source on loopback that accepts connections and never answers on them; closed,
    it hangs up on each, so the pulls stalled there fail."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)  # so the accept loop sees `close`
        self.port: int = self._server.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="blackhole")
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            self._conns.append(conn)

    def close(self) -> None:
        """Idempotent."""
        self._closed.set()
        self._thread.join()
        self._server.close()
        for conn in self._conns:
            conn.close()


@contextlib.contextmanager
def daemon_fed_by(source: Blackhole, env: dict[str, str], log: Path) -> Iterator[Server]:
    env = dict(
        env,
        A3S_POWER_MODEL_SOURCE=f"127.0.0.1:{source.port}/fleet",
        A3S_POWER_MODEL_SOURCE_INSECURE="1",
    )
    with power_server(env, log) as daemon:
        yield daemon


def waiting_request(daemon: Server, path: str, i: int) -> httpx.Response:
    """A request that needs model ``fresh<i>``, which only the model source could have."""
    body: dict[str, Any] = {"model": f"fresh{i}", "stream": False}
    if path == "/api/generate":
        body["prompt"] = "hi"
    elif path == "/api/create":
        body = {"model": f"made{i}", "from": f"fresh{i}", "stream": False}
    return httpx.post(f"{daemon.url}{path}", json=body, timeout=STALL_TIMEOUT_S * 4)


def pulls_started(daemon: Server) -> int:
    return daemon.log_text().count(" through from 127.0.0.1:")


def answers(daemon: Server, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    """The status of a request that needs only the local store; a test failure if it waits."""
    try:
        resp = httpx.request(method, f"{daemon.url}{path}", json=body, timeout=WITHIN_S)
    except httpx.TimeoutException:
        pytest.fail(f"{method} {path} waits while pull-throughs stall")
    return resp.status_code


def local_generate() -> dict[str, Any]:
    return {"model": LOCAL, "prompt": "hi", "stream": False, "options": {"num_predict": 2}}


@pytest.mark.parametrize("path", ["/api/show", "/api/generate", "/api/create"])
def test_requests_waiting_for_pulls_leave_local_requests_answering(
    path: str, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    with contextlib.closing(Blackhole()) as source:
        with daemon_fed_by(source, fleet_env, tmp_path / "power.log") as daemon:
            assert answers(daemon, "POST", "/api/generate", local_generate()) == 200  # loaded
            with ThreadPoolExecutor(WAITING) as pool:
                waiting = [pool.submit(waiting_request, daemon, path, i) for i in range(WAITING)]
                try:
                    # each pull starts from a waiting request's lookup: once as many have
                    # started as a pool has threads, a lookup that parked its thread until its
                    # pull ended would have taken every one
                    wait_until(lambda: pulls_started(daemon) >= THREADS, WITHIN_S)
                    assert answers(daemon, "GET", "/api/tags") == 200
                    assert answers(daemon, "GET", "/api/ps") == 200
                    assert answers(daemon, "GET", "/metrics") == 200
                    assert answers(daemon, "POST", "/api/show", {"model": LOCAL}) == 200
                    assert answers(daemon, "POST", "/api/generate", local_generate()) == 200
                    assert not any(f.done() for f in waiting)  # all of that while they stall
                finally:
                    source.close()  # the pulls fail, and what waited for them answers
                failed = [f.result() for f in waiting]
        assert [r.status_code for r in failed] == [502] * WAITING, [r.text for r in failed]
        assert f"127.0.0.1:{source.port}" in failed[0].json()["error"]  # names the source
