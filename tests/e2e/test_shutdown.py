"""Stopping and starting the daemon: streams finish or end in-band, a busy port, load crashes.

Runners use the fake engine (``count`` with a delay per token), so a stream's length is known.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.server import Server, power_server
from tests.support.wait import wait_until


def _home(env: dict[str, str], **config: float) -> dict[str, str]:
    home = Path(env["A3S_POWER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("".join(f"{k} = {v}\n" for k, v in config.items()))
    return env


@pytest.fixture
def slow(server_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    """Tokens every 50 ms; two sequences per runner; one second of grace after SIGTERM."""
    env = dict(server_env, A3S_POWER_RUNNER_ENGINE="fake:count?delay=0.05", OLLAMA_NUM_PARALLEL="2")
    _home(env, shutdown_grace_s=1)
    with power_server(env, tmp_path / "server.log") as srv:
        yield srv


def _stream(url: str, body: dict[str, object], into: list[bytes]) -> None:
    with httpx.stream("POST", url, json=body, timeout=60) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():  # raises if the body is cut mid-chunk
            into.append(line.encode())


def test_sigterm_finishes_streams_refuses_new_requests_with_503_and_logs_no_traceback(
    slow: Server,
) -> None:
    url = f"{slow.url}/api/generate"
    body = {"model": "smollm2", "prompt": "go", "options": {"num_predict": 12}}  # 0.6 s
    got: list[bytes] = []
    reader = threading.Thread(target=_stream, args=(url, body, got))
    reader.start()
    wait_until(lambda: len(got) >= 1)
    slow.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping: new requests are refused" in slow.log_text())
    late = httpx.post(url, json={"model": "smollm2", "prompt": "late"})  # still listening
    assert late.status_code == 503
    assert late.json() == {"error": "server is shutting down"}
    health = httpx.get(f"{slow.url}/health")  # a load balancer stops sending work here
    assert health.status_code == 503
    assert health.json()["status"] == "draining"
    reader.join(30)
    final = json.loads(got[-1])
    assert final["done"] is True
    assert final["eval_count"] == 12
    assert slow.proc.wait(30) == 0
    log = slow.log_text()
    assert "Traceback" not in log
    assert "cut short" not in log


def test_streams_running_at_the_grace_deadline_end_in_band_in_each_api_shape(
    slow: Server,
) -> None:
    long = {"num_predict": 2000}  # 100 s: far beyond the grace period
    native: list[bytes] = []
    openai: list[bytes] = []
    waiting: list[httpx.Response] = []
    threads = [
        threading.Thread(target=_stream, args=(
            f"{slow.url}/api/generate", {"model": "smollm2", "prompt": "go", "options": long},
            native)),
        threading.Thread(target=_stream, args=(
            f"{slow.url}/v1/chat/completions",
            {"model": "smollm2", "stream": True, "max_tokens": 2000,
             "messages": [{"role": "user", "content": "go"}]}, openai)),
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    wait_until(lambda: len(native) >= 1 and len(openai) >= 1)

    def wait_for_a_seat() -> None:  # both sequences are taken: this one queues
        body = {"model": "smollm2", "prompt": "x", "stream": False}
        waiting.append(httpx.post(f"{slow.url}/api/generate", json=body, timeout=60))

    waiter = threading.Thread(target=wait_for_a_seat)
    waiter.start()
    wait_until(lambda: httpx.get(f"{slow.url}/api/ps").json()["models"][0]["queued"] >= 1)
    slow.proc.send_signal(signal.SIGTERM)
    for thread in [*threads, waiter]:
        thread.join(30)
    assert json.loads(native[-1]) == {"error": "server is shutting down: the request was cut short"}
    assert openai[-1] != b"data: [DONE]"
    error = json.loads(next(x for x in openai if b'"error"' in x).removeprefix(b"data: "))
    assert error["error"]["message"] == "server is shutting down: the request was cut short"
    assert error["error"]["type"] == "server_busy_error"
    assert waiting[0].status_code == 503
    assert "shutting down" in waiting[0].json()["error"]
    assert slow.proc.wait(30) == 0
    log = slow.log_text()
    assert "2 request(s) still running after 1s were cut short" in log
    assert "Traceback" not in log
    assert not slow.runner_pids()


def test_a_busy_port_is_one_error_line_and_the_store_is_not_touched(
    server: Server, server_env: dict[str, str], tmp_path: Path
) -> None:
    data = b"uploaded for a create that has not happened yet"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert httpx.post(f"{server.url}/api/blobs/{digest}", content=data).status_code == 201
    blob = Path(server_env["OLLAMA_MODELS"]) / "blobs" / digest.replace(":", "-")
    assert blob.exists()
    second = subprocess.run(
        [sys.executable, "-m", "power", "serve", "--port", str(server.port)],
        env=server_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert second.stderr == (
        f"Error: listen tcp 127.0.0.1:{server.port}: bind: address already in use\n"
    )
    assert second.stdout == ""
    assert blob.exists()  # the second daemon pruned nothing
    assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 200


def test_a_runner_killed_while_loading_is_replaced_and_the_request_answered(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(server_env, A3S_POWER_RUNNER_ENGINE="fake:count?load_delay=1.5")
    with power_server(env, tmp_path / "server.log") as srv:
        answers: list[httpx.Response] = []
        body = {"model": "smollm2", "prompt": "go", "stream": False, "options": {"num_predict": 3}}
        request = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{srv.url}/api/generate", json=body, timeout=60)
            )
        )
        request.start()
        wait_until(lambda: "runner loading" in srv.log_text())
        # the runner now loading the model (the spare, or one started beside it while the
        # spare was still starting: the other is then the next spare)
        found = re.search(r"runner loading: model=smollm2:latest pid=(\d+)", srv.log_text())
        assert found is not None
        loading = int(found[1])
        os.kill(loading, signal.SIGKILL)
        request.join(60)
        assert answers[0].status_code == 200, answers[0].text
        assert answers[0].json()["response"] == "1 2 3 "
        assert "runner died while loading smollm2:latest; once more" in srv.log_text()
        assert not psutil.pid_exists(loading) or psutil.Process(loading).status() == "zombie"


def test_a_client_that_stopped_reading_does_not_hold_the_shutdown(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    """Its stream's handler waits in a write to it; SIGTERM still ends the daemon after its
    grace, and Hypercorn's own wait for connections (1 + 5 + 1 s), with the client's connection
    still open. (The runner finished the answer: no request is in flight, none is cut.)"""
    env = dict(server_env, A3S_POWER_RUNNER_ENGINE="fake:echo")
    _home(env, shutdown_grace_s=1)
    with power_server(env, tmp_path / "server.log") as srv:
        words = " ".join(f"{i}" + "w" * 25_000 for i in range(200))  # echoed: 5 MB of answer
        body = json.dumps({"model": "smollm2", "prompt": words, "raw": True}).encode()
        with socket.socket() as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (before connecting)
            client.connect(("127.0.0.1", int(srv.url.rsplit(":", 1)[1])))
            client.sendall(
                b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type:"
                b" application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            assert client.recv(12) == b"HTTP/1.1 200"  # and it reads no more
            port = client.getpeername()[1]
            wait_until(lambda: _unsent(port) > 100_000)  # the daemon's writes wait for the client
            srv.proc.send_signal(signal.SIGTERM)
            assert srv.proc.wait(20) == 0
        assert re.search(
            r"[1-9]\d* connection\(s\) of clients that read no more were shut", srv.log_text()
        )


def _unsent(port: int) -> int:
    """Bytes queued on loopback TCP sockets bound to ``port`` that their peers have not taken."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            total += int(fields[4].split(":")[0], 16)
    return total
