"""Models that share weights share a runner, but each request keeps its own model's num_ctx.

With the fake engine a word is a token, so prompt sizes are exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import Server, power_server

WORDS_600 = " ".join(f"w{i}" for i in range(600))


@pytest.fixture
def fake(server_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    env = dict(server_env, A3S_POWER_RUNNER_ENGINE="fake:echo")
    with power_server(env, tmp_path / "server.log") as srv:
        yield srv


def _post(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def test_a_model_sharing_a_larger_runner_keeps_its_own_context(fake: Server) -> None:
    small_model = {"model": "small", "from": "smollm2", "parameters": {"num_ctx": 256}}
    created = _post(fake, "/api/create", {**small_model, "stream": False})
    assert created.status_code == 200, created.text
    big = {"model": "smollm2", "prompt": WORDS_600, "raw": True, "stream": False,
           "truncate": False, "options": {"num_predict": 1}}  # fmt: skip
    assert _post(fake, "/api/generate", big).status_code == 200  # 4096 tokens of context
    (loaded,) = httpx.get(f"{fake.url}/api/ps").json()["models"]

    small = {**big, "model": "small"}
    refused = _post(fake, "/api/generate", small)
    assert refused.status_code == 400
    assert "context" in refused.json()["error"]
    cut = _post(fake, "/api/generate", {**small, "truncate": True})
    assert cut.status_code == 200
    assert 0 < cut.json()["prompt_eval_count"] <= 256
    embed = {"model": "small", "input": WORDS_600, "truncate": False}
    assert _post(fake, "/api/embed", embed).status_code == 400
    embedded = _post(fake, "/api/embed", {**embed, "truncate": True})
    assert embedded.status_code == 200
    assert embedded.json()["prompt_eval_count"] == 256

    models = {m["name"]: m for m in httpx.get(f"{fake.url}/api/ps").json()["models"]}
    assert set(models) == {"smollm2:latest", "small:latest"}
    assert models["small:latest"]["pid"] == models["smollm2:latest"]["pid"] == loaded["pid"]
    assert models["small:latest"]["context_length"] == 256
    assert models["smollm2:latest"]["context_length"] == loaded["context_length"] > 256
