"""A real ``power serve`` with its own model store for each model test; POST and upload helpers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, power_server


@pytest.fixture
def server(clean_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    env = dict(clean_env, OLLAMA_MODELS=str(tmp_path / "models"), PYTHONUNBUFFERED="1")
    with power_server(env, tmp_path / "server.log") as srv:
        yield srv


def post(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=110)


def upload(server: Server, path: Path) -> str:
    """Upload a local file as a blob (as clients do before a create); returns its digest."""
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    resp = httpx.post(f"{server.url}/api/blobs/{digest}", content=path.read_bytes(), timeout=60)
    assert resp.status_code in (200, 201), resp.text
    return digest
