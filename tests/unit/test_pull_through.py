"""Which registry a fleet's pull-through asks for a name (``PullThrough.source_of``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from power.registry.through import PullThrough
from power.store.names import ModelName
from tests.support.registry import make_service


@pytest.mark.anyio
async def test_names_map_onto_the_model_source_and_no_other_host(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    through = PullThrough(make_service(tmp_path), "reg.lan:5000", "team", insecure=True, loop=loop)

    def source(name: str) -> str | None:
        found = through.source_of(ModelName.parse(name))
        return None if found is None else found.full

    assert source("smollm2") == "reg.lan:5000/team/smollm2:latest"
    assert source("Qwen3:8B") == "reg.lan:5000/team/Qwen3:8B"
    assert source("alice/tool:1b") == "reg.lan:5000/alice/tool:1b"
    assert source("REG.lan:5000/other/m:2") == "REG.lan:5000/other/m:2"
    assert source("hf.co/bartowski/x:Q4_K_M") is None
    assert source("registry.ollama.ai/library/smollm2") == "reg.lan:5000/team/smollm2:latest"
