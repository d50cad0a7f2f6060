"""Operating the daemon: /health, /metrics moving with what they count, the access log.

Inference runs on the real runner with SmolLM2 unless a test needs a queue or a crash (then the
fake engine behind the runner protocol, whose timing and exits are known).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from power import __version__
from tests.support.server import Server, power_server
from tests.support.wait import wait_until

MODEL = "smollm2:latest"
PRICE_IN, PRICE_OUT = 3.0, 15.0  # dollars per million tokens


def _with_config(env: dict[str, str], text: str) -> dict[str, str]:
    home = Path(env["A3S_POWER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text)
    return env


@pytest.fixture
def priced(server_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    env = _with_config(
        dict(server_env),
        f'[pricing."{MODEL}"]\ninput_per_million = {PRICE_IN}\noutput_per_million = {PRICE_OUT}\n',
    )
    with power_server(env, tmp_path / "server.log") as srv:
        yield srv


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` by (name, sorted labels)."""
    resp = httpx.get(f"{server.url}/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def names(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    return {name for name, _ in samples}


def test_health_answers_its_fields_and_counts_loaded_models(server: Server) -> None:
    first = httpx.get(f"{server.url}/health")
    assert first.status_code == 200
    body = first.json()
    assert set(body) >= {"status", "version", "uptime_seconds", "loaded_models"}
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["loaded_models"] == 0
    assert isinstance(body["uptime_seconds"], float)
    assert httpx.head(f"{server.url}/health").status_code == 200
    gen = {"model": "smollm2", "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
    assert httpx.post(f"{server.url}/api/generate", json=gen, timeout=120).status_code == 200
    later = httpx.get(f"{server.url}/health").json()
    assert later["loaded_models"] == 1
    assert later["uptime_seconds"] > body["uptime_seconds"]


def test_inference_moves_tokens_durations_cost_and_load_series(priced: Server) -> None:
    before = scrape(priced)
    gen = {
        "model": "smollm2",
        "prompt": "Why is the sky blue?",
        "stream": False,
        "options": {"num_predict": 7, "temperature": 0, "seed": 1},
    }
    done = httpx.post(f"{priced.url}/api/generate", json=gen, timeout=120).json()
    chat = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Say hi"}],
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{priced.url}/v1/chat/completions", json=chat, timeout=120) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: {")]
    usage = json.loads(lines[-1].removeprefix("data: "))["usage"]
    after = scrape(priced)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    prompt = done["prompt_eval_count"] + usage["prompt_tokens"]
    output = done["eval_count"] + usage["completion_tokens"]
    assert done["eval_count"] == 7
    assert grew("power_inference_tokens_total", model=MODEL, type="output") == output
    assert grew("power_inference_tokens_total", model=MODEL, type="input") == prompt
    assert grew("power_inference_duration_seconds_count", model=MODEL) == 2
    assert grew("power_ttft_seconds_count", model=MODEL) == 2
    assert grew("power_ttft_seconds_sum", model=MODEL) > 0
    assert grew("power_cost_dollars", model=MODEL) == pytest.approx(
        (prompt * PRICE_IN + output * PRICE_OUT) / 1e6
    )
    assert grew("power_model_load_duration_seconds_count", model=MODEL) == 1
    assert value(after, "power_model_memory_bytes", model=MODEL, kind="ram") > 0
    assert value(after, "power_loaded_models") == 1
    assert ("power_requests_in_flight", (("model", MODEL),)) in after
    # routes by template, never by raw path
    assert grew("power_http_requests_total", route="/api/generate", method="POST",
                status="200") == 1  # fmt: skip
    assert grew("power_http_requests_total", route="/v1/chat/completions", method="POST",
                status="200") == 1  # fmt: skip
    # no GPU here: the GPU series are absent, not zeros
    assert not {"power_gpu_memory_bytes", "power_gpu_utilization"} & names(after)


def test_route_templates_keep_label_cardinality_bounded(server: Server) -> None:
    for n in range(3):
        digest = f"sha256:{n:064x}"
        assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 404
    assert httpx.get(f"{server.url}/no/such/{'x' * 20}").status_code == 404
    samples = scrape(server)
    routes = {dict(labels).get("route") for name, labels in samples
              if name == "power_http_requests_total"}  # fmt: skip
    assert "/api/blobs/{digest}" in routes
    assert "unmatched" in routes
    assert not any("sha256" in (r or "") or "x" * 20 in (r or "") for r in routes)
    assert value(samples, "power_http_requests_total", route="/api/blobs/{digest}",
                 method="HEAD", status="404") == 3  # fmt: skip


def test_unloads_count_as_evictions_and_runner_exits_with_their_reason(server: Server) -> None:
    gen = {"model": "smollm2", "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
    assert httpx.post(f"{server.url}/api/generate", json=gen, timeout=120).status_code == 200
    unload = {"model": "smollm2", "keep_alive": 0}
    assert httpx.post(f"{server.url}/api/generate", json=unload, timeout=60).status_code == 200
    wait_until(lambda: value(scrape(server), "power_loaded_models") == 0)
    samples = scrape(server)
    assert value(samples, "power_model_evictions_total", model=MODEL, reason="request") == 1
    assert value(samples, "power_runner_exits_total", model=MODEL, reason="request") == 1
    assert ("power_model_memory_bytes", (("kind", "ram"), ("model", MODEL))) not in samples


@pytest.fixture
def fake(server_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    """Tokens every 50 ms, one sequence, so a second request queues."""
    env = dict(server_env, A3S_POWER_RUNNER_ENGINE="fake:count?delay=0.05",
               OLLAMA_NUM_PARALLEL="1")  # fmt: skip
    with power_server(env, tmp_path / "server.log") as srv:
        yield srv


def test_queue_depth_and_wait_and_crashes_are_counted(fake: Server) -> None:
    url = f"{fake.url}/api/generate"
    long = {"model": "smollm2", "prompt": "go", "stream": False, "options": {"num_predict": 40}}
    results: list[httpx.Response] = []
    first = threading.Thread(target=lambda: results.append(httpx.post(url, json=long, timeout=60)))
    first.start()
    wait_until(lambda: value(scrape(fake), "power_requests_in_flight", model=MODEL) == 1)
    second = threading.Thread(target=lambda: results.append(httpx.post(url, json=long, timeout=60)))
    second.start()
    wait_until(lambda: value(scrape(fake), "power_queue_depth") == 1)
    first.join(60)
    second.join(60)
    assert [r.status_code for r in results] == [200, 200]
    samples = scrape(fake)
    assert value(samples, "power_queue_depth") == 0
    assert value(samples, "power_queue_wait_seconds_count") == 2
    assert value(samples, "power_queue_wait_seconds_sum") > 0.5  # the second waited ~2 s

    pid = httpx.get(f"{fake.url}/api/ps").json()["models"][0]["pid"]  # (not the spare)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: value(scrape(fake), "power_runner_exits_total", model=MODEL,
                             reason="crash") == 1)  # fmt: skip
    exits = httpx.get(f"{fake.url}/api/ps").json()["recent_exits"]
    assert exits[-1]["model"] == MODEL
    assert exits[-1]["pid"] == pid
    assert exits[-1]["reason"] == "crash"


def test_access_log_line_per_request_in_text_and_json(
    server_env: dict[str, str], tmp_path: Path, server: Server
) -> None:
    gen = {"model": "smollm2", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    done = httpx.post(f"{server.url}/api/generate", json=gen, timeout=120).json()
    httpx.get(f"{server.url}/api/tags")
    wait_until(lambda: "GET /api/tags 200" in server.log_text())
    line = next(x for x in server.log_text().splitlines() if "POST /api/generate 200" in x)
    assert "power.access" in line
    assert f"model={MODEL}" in line
    assert f"prompt_tokens={done['prompt_eval_count']}" in line
    assert "output_tokens=2" in line
    assert "client=127.0.0.1:" in line

    env = dict(server_env, A3S_POWER_LOG_FORMAT="json")
    with power_server(env, tmp_path / "json.log") as srv:
        headers = {"Authorization": "Bearer sk-not-a-secret-to-log-0123456789"}
        httpx.post(f"{srv.url}/api/generate", json=gen, timeout=120, headers=headers)
        wait_until(lambda: '"route": "/api/generate"' in srv.log_text())
        records = [json.loads(x) for x in srv.log_text().splitlines() if x.startswith("{")]
        text = srv.log_text()
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    access = next(r for r in records if r.get("route") == "/api/generate")
    assert access["logger"] == "power.access"
    assert access["method"] == "POST"
    assert access["status"] == 200
    assert access["model"] == MODEL
    assert access["output_tokens"] == 2
    assert access["client"].startswith("127.0.0.1:")
    assert "sk-not-a-secret" not in text
