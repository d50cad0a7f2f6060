"""Fixtures: ``python -m power serve`` as a real child process (``tests.support.server``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.limited import BODY_LIMIT, BODY_TIMEOUT_S, MODEL, PLAIN
from tests.support.server import Server, power_server


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


@pytest.fixture
def limited_server(server_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    """A server on the fake echo engine with a 1 MiB body limit and the model ``fuzz``."""
    env = dict(
        server_env,
        A3S_POWER_RUNNER_ENGINE="fake:echo",
        A3S_POWER_MAX_BODY_SIZE=str(BODY_LIMIT),
        A3S_POWER_BODY_TIMEOUT=str(BODY_TIMEOUT_S),
    )
    with power_server(env, tmp_path / "server.log") as srv:
        body = {"model": MODEL, "from": "smollm2", "template": PLAIN, "stream": False}
        resp = httpx.post(f"{srv.url}/api/create", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        yield srv
