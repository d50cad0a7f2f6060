"""The daemon as a process: streams, runner crashes, shutdown. Runners use the fake engine."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.server import Server, power_server
from tests.support.wait import wait_until


@pytest.fixture
def fake_server(server_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    env = dict(server_env, A3S_POWER_RUNNER_ENGINE="fake:count?delay=0.02")
    with power_server(env, tmp_path / "server.log") as srv:
        yield srv


def loaded_pid(server: Server) -> int:
    (model,) = httpx.get(f"{server.url}/api/ps").json()["models"]
    pid: int = model["pid"]
    return pid


def _stream(url: str, body: Mapping[str, object]) -> Iterator[dict[str, object]]:
    with httpx.stream("POST", url, json=body, timeout=30) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            yield json.loads(line)


def test_kill_9_of_the_runner_mid_stream_ends_the_stream_with_an_error_line(
    fake_server: Server,
) -> None:
    url = f"{fake_server.url}/api/generate"
    lines = []
    for line in _stream(url, {"model": "smollm2", "prompt": "go"}):
        lines.append(line)
        if len(lines) == 3:
            pid = loaded_pid(fake_server)
            os.kill(pid, signal.SIGKILL)
    assert all("response" in line for line in lines[:3])
    assert "SIGKILL" in str(lines[-1]["error"])
    assert "out of memory" in str(lines[-1]["error"])
    # The gateway survived, and the next request gets a fresh runner.
    resp = httpx.post(
        url,
        json={"model": "smollm2", "prompt": "go", "stream": False, "options": {"num_predict": 3}},
        timeout=30,
    )
    assert resp.status_code == 200
    assert resp.json()["response"] == "1 2 3 "
    ps = httpx.get(f"{fake_server.url}/api/ps").json()["models"]
    assert ps[0]["pid"] != pid
    assert fake_server.proc.poll() is None


def test_sigterm_lets_a_stream_finish_then_exits_0_with_no_runner_left(
    fake_server: Server,
) -> None:
    url = f"{fake_server.url}/api/generate"
    got: list[dict[str, object]] = []
    body = {"model": "smollm2", "prompt": "go", "options": {"num_predict": 40}}

    def consume() -> None:
        got.extend(_stream(url, body))

    reader = threading.Thread(target=consume)
    reader.start()
    wait_until(lambda: len(got) >= 2)
    runners = fake_server.runner_pids()  # the loaded runner and the spare
    assert loaded_pid(fake_server) in runners
    assert fake_server.stop(signal.SIGTERM) == 0
    reader.join(10)
    assert got[-1]["done"] is True
    assert got[-1]["done_reason"] == "length"
    assert got[-1]["eval_count"] == 40
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in runners)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])  # (HUP: its terminal closed)
def test_sigterm_when_idle_unloads_everything(fake_server: Server, sig: signal.Signals) -> None:
    resp = httpx.post(f"{fake_server.url}/api/generate", json={"model": "smollm2"}, timeout=30)
    assert resp.json()["done_reason"] == "load"
    pids = fake_server.runner_pids()
    assert loaded_pid(fake_server) in pids
    assert fake_server.stop(sig) == 0
    assert not any(psutil.pid_exists(pid) for pid in pids)
    assert "stopped" in fake_server.log_text()


def test_errors_before_streaming_are_real_statuses(fake_server: Server) -> None:
    url = fake_server.url
    r = httpx.post(f"{url}/api/generate", json={"model": "nope", "prompt": "x"})
    assert (r.status_code, r.json()) == (404, {"error": "model 'nope' not found"})
    r = httpx.post(f"{url}/api/chat", content=b"")
    assert (r.status_code, r.json()) == (400, {"error": "missing request body"})
    r = httpx.post(f"{url}/api/chat", content=b"{not json")
    assert r.status_code == 400
    r = httpx.post(
        f"{url}/api/generate",
        json={"model": "smollm2", "prompt": "x", "options": {"num_predict": "many"}},
    )
    assert r.status_code == 400
    assert "num_predict" in r.json()["error"]
    r = httpx.post(
        f"{url}/api/generate", json={"model": "smollm2", "prompt": "x", "keep_alive": "3600"}
    )
    assert r.status_code == 400
    r = httpx.get(f"{url}/api/ps", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert r.content == b""
    r = httpx.get(f"{url}/api/ps", headers={"Host": "evil.example"})
    assert r.status_code == 403


def test_stop_unloads_and_the_process_is_gone(fake_server: Server) -> None:
    url = fake_server.url
    httpx.post(f"{url}/api/generate", json={"model": "smollm2"}, timeout=30)
    pid = loaded_pid(fake_server)
    r = httpx.post(f"{url}/api/generate", json={"model": "smollm2", "keep_alive": 0}, timeout=30)
    assert r.json()["done_reason"] == "unload"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    ps = httpx.get(f"{url}/api/ps").json()
    assert ps["models"] == []
    (gone,) = ps["recent_exits"]  # why it went, for a remote operator
    assert (gone["model"], gone["pid"], gone["reason"]) == ("smollm2:latest", pid, "request")
    assert gone["exit"] == "exit status 0"


def test_a_client_that_disconnects_while_queued_leaves_the_queue(fake_server: Server) -> None:
    url = fake_server.url
    body = {"model": "smollm2", "prompt": "go", "options": {"num_predict": 300}}
    first: list[dict[str, object]] = []
    reader = threading.Thread(target=lambda: first.extend(_stream(f"{url}/api/generate", body)))
    reader.start()
    wait_until(lambda: len(first) >= 2)

    def queued() -> int:
        models = httpx.get(f"{url}/api/ps").json()["models"]
        return int(models[0]["queued"]) if models else -1

    with pytest.raises(httpx.ReadTimeout):  # the client gives up while waiting for a seat
        httpx.post(f"{url}/api/generate", json=body, timeout=httpx.Timeout(30, read=0.5))
    wait_until(lambda: queued() == 0)
    assert reader.is_alive()  # the first stream is still generating
    reader.join(30)
    assert first[-1]["done"] is True


def test_a_full_queue_is_503_with_retry_after_on_every_api(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(server_env, A3S_POWER_RUNNER_ENGINE="fake:count?delay=0.02", OLLAMA_MAX_QUEUE="1")
    with power_server(env, tmp_path / "server.log") as srv:
        url = srv.url
        body = {"model": "smollm2", "prompt": "go", "options": {"num_predict": 300}}
        first: list[dict[str, object]] = []
        reader = threading.Thread(target=lambda: first.extend(_stream(f"{url}/api/generate", body)))
        reader.start()
        wait_until(lambda: len(first) >= 2)
        waiter = threading.Thread(target=httpx.post, args=(f"{url}/api/generate",),
                                  kwargs={"json": body, "timeout": 60})  # fmt: skip
        waiter.start()
        wait_until(lambda: httpx.get(f"{url}/api/ps").json()["models"][0]["queued"] == 1)
        chat = {"model": "smollm2", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        refused = {
            "native": httpx.post(f"{url}/api/generate", json=body),
            "openai": httpx.post(f"{url}/v1/chat/completions", json=chat),
            "anthropic": httpx.post(f"{url}/v1/messages", json=chat),
        }
        reader.join(60)
        waiter.join(60)
    assert {api: r.status_code for api, r in refused.items()} == dict.fromkeys(refused, 503)
    assert all(r.headers["Retry-After"].isdigit() for r in refused.values())
    message = "server busy, please try again.  maximum pending requests exceeded"
    assert refused["native"].json() == {"error": message}
    assert refused["openai"].json()["error"]["message"] == message
    assert refused["anthropic"].json()["error"] == {"type": "overloaded_error", "message": message}
    assert first[-1]["done"] is True
    log = srv.log_text()
    assert " ERROR " not in log  # overload is not an error
    assert log.count("refused: server busy") == 1  # one WARNING for the burst
