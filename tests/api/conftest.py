"""The API tests' default app: the real Starlette app over scripted runners and a store with
the scripted models (a module that needs another app defines its own ``client``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from power.settings import Settings
from tests.support.app import TestClient, app_client, scripted_store
from tests.support.runners import ScriptedRunners


@pytest.fixture
def sup() -> ScriptedRunners:
    return ScriptedRunners()


@pytest.fixture
def client(tmp_path: Path, sup: ScriptedRunners) -> Iterator[TestClient]:
    with app_client(Settings(home=str(tmp_path)), sup, scripted_store(tmp_path)) as c:
        yield c
