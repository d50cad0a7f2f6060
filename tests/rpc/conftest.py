"""Fixtures of the RPC tests: two llama.cpp RPC workers on loopback, and servers that split
SmolLM2 over them. These tests need llama-cpp-python built with ``GGML_RPC=ON``: they run in
the ``rpc`` nox session, which builds it once and caches the wheel (docs/rpc.md), not in
``tests``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.rpc import Worker, rpc_worker


@pytest.fixture
def server_env(clean_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A store shared by the servers of one test (SmolLM2 is imported once)."""
    return dict(clean_env, OLLAMA_MODELS=str(tmp_path / "models"), PYTHONUNBUFFERED="1")


@pytest.fixture
def workers(clean_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[Worker, Worker]]:
    with (
        rpc_worker(clean_env, tmp_path / "worker-a.log") as a,
        rpc_worker(clean_env, tmp_path / "worker-b.log") as b,
    ):
        yield a, b


@pytest.fixture
def split_env(server_env: dict[str, str], workers: tuple[Worker, Worker]) -> dict[str, str]:
    """A server whose models are split over both workers (runner lines in its log)."""
    endpoints = ",".join(w.endpoint for w in workers)
    return dict(server_env, A3S_POWER_RPC_WORKERS=endpoints, OLLAMA_DEBUG="1")
