"""The CLI unit tests' canned Ollama server and a click runner pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.fake_ollama import FakeOllama, serve_fake


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with serve_fake() as state:
        yield state


@pytest.fixture
def runner(fake: FakeOllama, tmp_path: Path) -> CliRunner:
    return CliRunner(env={"OLLAMA_HOST": fake.url, "A3S_POWER_HOME": str(tmp_path)})
