"""GET /v1/usage over the real app and a real usage database: every API's inference requests
are recorded (streamed or not, failed ones too), summed per day and model, priced."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from power.create.build import create_model
from power.errors import PowerError
from power.settings import Price, Settings
from power.store.store import ModelStore
from power.usage import UsageRecorder, usage_path
from proto import Done, Stats, Tokens
from tests.support.app import PLAIN, TestClient, app_client
from tests.support.gguf import tiny_gguf
from tests.support.runners import ScriptedRunners

PRICES = {
    "plain:latest": Price(input_per_million=1_000_000, output_per_million=2_000_000),
    "default": Price(input_per_million=100_000),
}


@pytest.fixture
def sup() -> ScriptedRunners:
    runners = ScriptedRunners()
    done = Done(id=1, reason="stop", stats=Stats(prompt_tokens=7, eval_tokens=3))
    runners.script = [[Tokens(id=1, text="hi", ids=(1,))], [done]]
    runners.vectors = [[1.0, 0.0]]
    return runners


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    gguf = store.add_blob_from_file(tiny_gguf(tmp_path / "tiny.gguf"))
    for name in ("plain", "other"):
        for _ in create_model(store, name, {"from": gguf, "template": PLAIN}):
            pass
    return store


@pytest.fixture
def client(tmp_path: Path, sup: ScriptedRunners, store: ModelStore) -> Iterator[TestClient]:
    settings = Settings(home=str(tmp_path), pricing=PRICES)
    recorder = UsageRecorder.start(usage_path(settings.home), retention_days=0)
    try:
        with app_client(settings, sup, store, usage=recorder) as c:
            yield c
    finally:
        recorder.close()


def usage(client: TestClient, **query: str) -> dict[str, Any]:
    resp = client.get("/v1/usage", params=query)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def today() -> str:
    return datetime.now(UTC).date().isoformat()


USER = [{"role": "user", "content": "hello"}]
REQUESTS = [
    ("/api/generate", {"model": "plain", "prompt": "x", "stream": False}),
    ("/api/generate", {"model": "plain", "prompt": "x"}),
    ("/api/chat", {"model": "plain", "messages": USER}),
    ("/v1/chat/completions", {"model": "plain", "messages": USER}),
    ("/v1/chat/completions", {"model": "plain", "messages": USER, "stream": True}),
    ("/v1/completions", {"model": "plain", "prompt": "x", "stream": True}),
    ("/v1/messages", {"model": "plain", "messages": USER, "max_tokens": 5}),
    ("/v1/messages", {"model": "plain", "messages": USER, "max_tokens": 5, "stream": True}),
    ("/v1/responses", {"model": "plain", "input": "x"}),
]


def test_every_api_records_its_tokens_once(client: TestClient) -> None:
    for path, body in REQUESTS:
        resp = client.post(path, json=body)
        assert resp.status_code == 200, (path, resp.text)
    n = len(REQUESTS)
    row = {"date": today(), "model": "plain:latest", "requests": n, "prompt_tokens": 7 * n,
           "completion_tokens": 3 * n, "total_tokens": 10 * n, "cost": 13.0 * n}  # fmt: skip
    assert usage(client) == {"data": [row], "total": {k: v for k, v in row.items()
                                                      if k not in ("date", "model")}}  # fmt: skip


def test_embeddings_count_their_input_tokens(client: TestClient) -> None:
    assert client.post("/api/embed", json={"model": "other", "input": "a b c"}).status_code == 200
    resp = client.post("/v1/embeddings", json={"model": "other", "input": "d e"})
    assert resp.status_code == 200
    assert client.post("/api/embeddings", json={"model": "other", "prompt": "f"}).status_code == 200
    [row] = usage(client)["data"]
    counts = (row["model"], row["requests"], row["prompt_tokens"], row["completion_tokens"])
    assert counts == ("other:latest", 3, 6, 0)
    assert row["cost"] == pytest.approx(0.6)  # the default price: 6 tokens at $100k/M


def test_a_request_that_fails_midway_is_recorded(
    client: TestClient, sup: ScriptedRunners, tmp_path: Path
) -> None:
    sup.script = [sup.script[0], PowerError("the runner crashed")]  # a crash after "hi"
    client.post("/api/generate", json={"model": "plain", "prompt": "x"})  # cut after "hi"
    resp = client.post("/api/generate", json={"model": "plain", "prompt": "x", "stream": False})
    assert resp.status_code == 500
    assert usage(client)["total"]["requests"] == 2
    conn = sqlite3.connect(usage_path(str(tmp_path)))
    rows = conn.execute("SELECT route, status, failed, error FROM requests ORDER BY id").fetchall()
    conn.close()
    assert rows == [
        ("/api/generate", 200, 1, "the runner crashed"),
        ("/api/generate", 500, 1, "the runner crashed"),
    ]


def test_requests_that_ran_no_model_are_not_usage(client: TestClient) -> None:
    assert client.get("/api/tags").status_code == 200
    assert client.post("/api/generate", json={"model": "ghost", "prompt": "x"}).status_code == 404
    assert usage(client)["data"] == []


def test_filters_by_day_and_model(client: TestClient) -> None:
    client.post("/api/generate", json={"model": "plain", "prompt": "x", "stream": False})
    client.post("/api/embed", json={"model": "other", "input": "a"})
    day = today()
    assert [r["model"] for r in usage(client, start=day, end=day)["data"]] == [
        "other:latest", "plain:latest"
    ]  # fmt: skip
    assert [r["model"] for r in usage(client, model="PLAIN")["data"]] == ["plain:latest"]
    assert usage(client, model="other:latest")["total"]["requests"] == 1
    assert usage(client, end="2000-01-01") == usage(client, model="ghost")
    assert usage(client, start="2999-01-01")["total"] == {
        "requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": 0.0
    }  # fmt: skip


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"start": "yesterday"}, "start"),
        ({"start": "2025-02-30"}, "start"),
        ({"end": "2025-1-1"}, "end"),
        ({"end": "2025-01-01T00:00"}, "end"),
        ({"start": "2025-03-02", "end": "2025-03-01"}, "end"),
        ({"model": "no good!"}, "model"),
    ],
)
def test_bad_parameters_are_400_naming_them(
    client: TestClient, query: dict[str, str], param: str
) -> None:
    resp = client.get("/v1/usage", params=query)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert f"'{param}'" in error["message"]


def test_without_a_recorder_usage_is_an_error_not_an_empty_report(
    tmp_path: Path, sup: ScriptedRunners, store: ModelStore
) -> None:
    with app_client(Settings(home=str(tmp_path)), sup, store) as c:
        resp = c.get("/v1/usage")
    assert resp.status_code == 500
    assert resp.json()["error"]["message"] == "usage is not recorded by this server"
