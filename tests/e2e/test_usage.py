"""Usage and cost through the real daemon and the real SmolLM2 runner: what the responses report
is what ``/v1/usage`` and ``power usage`` show, and it survives a restart and a ``kill -9``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support.server import Server, power_server

MODEL = "smollm2:latest"
PRICE_IN, PRICE_OUT = 2.5, 10.0  # dollars per million tokens
POWER = Path(sys.executable).parent / "power"  # the console script pip installed


@pytest.fixture
def env(server_env: dict[str, str]) -> dict[str, str]:
    """A home whose config.toml prices SmolLM2 (by its bare name) and nothing else."""
    home = Path(server_env["A3S_POWER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[pricing."smollm2"]\ninput_per_million = {PRICE_IN}\noutput_per_million = {PRICE_OUT}\n'
    )
    return server_env


def generate(server: Server) -> tuple[int, int]:
    body = {"model": "smollm2", "prompt": "Say hi.", "stream": False,
            "options": {"num_predict": 8, "temperature": 0}}  # fmt: skip
    resp = httpx.post(f"{server.url}/api/generate", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    done = resp.json()
    return done["prompt_eval_count"], done["eval_count"]


def streamed_chat(server: Server) -> tuple[int, int]:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Count to three."}],
            "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    usage: dict[str, int] = {}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage") or usage
    return usage["prompt_tokens"], usage["completion_tokens"]


def usage(server: Server, **query: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/usage", params=query, timeout=30)


def expected(requests: int, prompt: int, completion: int) -> dict[str, Any]:
    cost = round((prompt * PRICE_IN + completion * PRICE_OUT) / 1e6, 9)
    total = {"requests": requests, "prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion, "cost": cost}  # fmt: skip
    today = datetime.now(UTC).date().isoformat()
    return {"data": [{"date": today, "model": MODEL, **total}], "total": total}


def power_usage(
    server: Server, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(POWER), "usage", *args],
        env={**env, "OLLAMA_HOST": f"127.0.0.1:{server.port}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_reported_tokens_are_the_usage_and_survive_a_restart(
    env: dict[str, str], tmp_path: Path
) -> None:
    with power_server(env, tmp_path / "first.log") as server:
        p1, c1 = generate(server)
        p2, c2 = streamed_chat(server)
        assert min(p1, c1, p2, c2) > 0
        want = expected(2, p1 + p2, c1 + c2)
        assert usage(server).json() == want
        day = want["data"][0]["date"]
        assert usage(server, start=day, end=day, model="SmolLM2").json() == want

        shown = power_usage(server, env)
        assert shown.returncode == 0, shown.stderr
        lines = [line.split() for line in shown.stdout.splitlines()]
        assert lines[0][:3] == ["DATE", "MODEL", "REQUESTS"]
        cost = f"{want['total']['cost']:.6f}"
        counts = [str(want["total"][k]) for k in
                  ("requests", "prompt_tokens", "completion_tokens", "total_tokens")]  # fmt: skip
        assert lines[1:] == [[day, MODEL, *counts, cost], ["TOTAL", *counts, cost]]

        assert server.stop() == 0
    with power_server(env, tmp_path / "second.log") as server:
        assert usage(server).json() == want


def test_bad_dates_are_400_in_the_api_and_an_error_in_the_cli(
    env: dict[str, str], tmp_path: Path
) -> None:
    with power_server(env, tmp_path / "server.log") as server:
        resp = usage(server, start="2025-13-01")
        assert resp.status_code == 400
        assert resp.json()["error"]["param"] == "start"
        resp = usage(server, start="2025-03-02", end="2025-03-01")
        assert resp.status_code == 400
        assert resp.json()["error"]["param"] == "end"

        shown = power_usage(server, env, "--end", "tomorrow")
        assert shown.returncode == 1
        assert shown.stderr.strip() == ("Error: invalid 'end' date 'tomorrow': expected YYYY-MM-DD")
        empty = power_usage(server, env, "--start", "2000-01-01", "--end", "2000-01-31")
        assert empty.returncode == 0, empty.stderr
        assert [line.split()[0] for line in empty.stdout.splitlines()] == ["DATE", "TOTAL"]


def test_a_kill_9_a_second_and_a_half_after_a_request_keeps_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    with power_server(env, tmp_path / "first.log") as server:
        prompt, completion = generate(server)
        time.sleep(1.5)  # the promise: at most the last second is lost
        runners = [psutil.Process(pid) for pid in server.runner_pids()]
        os.kill(server.proc.pid, signal.SIGKILL)
        assert server.proc.wait(30) == -signal.SIGKILL
        # the runners are no longer our children: reap them here, by pid
        _, alive = psutil.wait_procs(runners, timeout=30)
        for proc in alive:
            proc.kill()
        psutil.wait_procs(alive, timeout=30)
    with power_server(env, tmp_path / "second.log") as server:
        assert usage(server).json() == expected(1, prompt, completion)
