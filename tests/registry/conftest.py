"""Fixtures: a real ``docker-registry`` (``tests.support.registry``) anonymous, with basic
credentials or with Bearer tokens; a tiny model to publish; a power server on fake runners.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.registry import Registry, run_registry
from tests.support.server import Server, power_server
from tests.support.synth import write_llama_gguf
from tests.support.token_realm import TokenIssuer


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with run_registry(tmp_path / "registry") as reg:
        yield reg


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[Registry]:
    with run_registry(tmp_path / "auth-registry", auth=True) as reg:
        yield reg


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[Registry]:
    """Bearer tokens only; the test serves the realm with ``serve_tokens(reg.tokens)``."""
    tokens = TokenIssuer.create(tmp_path / "token", free_port())
    with run_registry(tmp_path / "token-registry", tokens=tokens) as reg:
        yield reg


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A ~1.6 MB F16 llama GGUF: quick to publish, splits into parts with a small part size."""
    return write_llama_gguf(
        tmp_path_factory.mktemp("synth") / "tiny.gguf", dtype="f16"
    ).read_bytes()


@pytest.fixture
def env(clean_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    e = dict(clean_env)
    e["OLLAMA_MODELS"] = str(tmp_path / "models")
    e["PYTHONUNBUFFERED"] = "1"
    e["A3S_POWER_RUNNER_ENGINE"] = "fake:echo"
    return e


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    with power_server(env, tmp_path / "server.log") as srv:
        yield srv
