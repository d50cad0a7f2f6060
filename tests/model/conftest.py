"""Fixtures: a real ``power serve`` with its own model store for each model test, and SmolLM2
as a model stub for tests that drive the real Supervisor directly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from power.store.model import LocalModel
from tests.support.server import Server, power_server
from tests.support.spawn import stub_model


@pytest.fixture
def server(clean_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    env = dict(clean_env, OLLAMA_MODELS=str(tmp_path / "models"), PYTHONUNBUFFERED="1")
    with power_server(env, tmp_path / "server.log") as srv:
        yield srv


@pytest.fixture
def model(smollm2_gguf: Path) -> LocalModel:
    return stub_model(smollm2_gguf, "smollm2:latest")
