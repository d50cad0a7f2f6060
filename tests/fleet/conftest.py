"""Fixtures: a fleet of real ``power serve`` daemons on the fake engine behind HAProxy
(``tests.support.fleet``), sharing one store that holds a few tiny models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from power.store.store import ModelStore
from tests.support.fleet import FLEET_MODELS, Proxy, run_haproxy
from tests.support.registry import local_model
from tests.support.server import power_server
from tests.support.synth import write_llama_gguf

DAEMONS = 3
# a token every 50 ms: a stream of 60 tokens is still running while a test acts on its daemon
ENGINE = "fake:count?delay=0.05"


@pytest.fixture(scope="session")
def fleet_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store with ``FLEET_MODELS`` (weights do not matter to the fake engine)."""
    root = tmp_path_factory.mktemp("fleet-models")
    gguf = write_llama_gguf(root / "tiny.gguf", dtype="f16").read_bytes()
    store = ModelStore(root / "models")
    for name in FLEET_MODELS:
        local_model(store, gguf, name)
    return root / "models"


@pytest.fixture
def fleet_env(clean_env: dict[str, str], fleet_store: Path) -> dict[str, str]:
    env = dict(clean_env)
    env.update(OLLAMA_MODELS=str(fleet_store), PYTHONUNBUFFERED="1", A3S_POWER_RUNNER_ENGINE=ENGINE)
    return env


@pytest.fixture
def fleet(fleet_env: dict[str, str], tmp_path: Path) -> Iterator[Proxy]:
    """``DAEMONS`` daemons on one store behind HAProxy; every process is reaped on exit."""
    with contextlib.ExitStack() as stack:
        daemons = [
            stack.enter_context(power_server(fleet_env, tmp_path / f"power{i}.log"))
            for i in range(1, DAEMONS + 1)
        ]
        yield stack.enter_context(run_haproxy(tmp_path / "haproxy", daemons))
