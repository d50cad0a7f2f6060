"""Requests too large for the machine or for a runner frame: clear 4xx, and the runner lives on.

The real Supervisor with fake-engine runners; the memory probe is the seam for "free RAM".
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from power.api.ps import ps_models
from power.errors import PowerError
from power.store.model import LocalModel
from power.supervisor import Supervisor
from power.supervisor.memory import MachineMemory
from proto import MAX_FRAME, LoadParams
from tests.support.spawn import Spawner, collect, gen, model, params, settings

pytestmark = pytest.mark.anyio

# a small llama: 30 layers, 3 KV heads of 64, no training context (so num_ctx is not clamped)
METADATA = {
    "general.architecture": "llama",
    "llama.block_count": 30,
    "llama.embedding_length": 576,
    "llama.attention.head_count": 9,
    "llama.attention.head_count_kv": 3,
    "llama.vocab_size": 49152,
}


def llama(tmp_path: Path, **extra: Any) -> LocalModel:
    return model(tmp_path, metadata={**METADATA, **extra})


def probe() -> MachineMemory:
    return MachineMemory(available_ram=8 * 2**30)


@pytest.mark.parametrize(
    ("option", "n_ctx", "n_batch", "ram"),
    [
        ("num_ctx", 2**31 - 1, 512, 8 * 2**30),
        # the runner batches at most its context (4,096 cells here, ~0.8 GiB of compute
        # buffers for this vocabulary); the defaults (512) need ~0.2 GiB
        ("num_batch", 4096, 2**31 - 1, 2**30),
    ],
)
async def test_an_option_that_makes_the_model_not_fit_is_a_400_naming_it(
    tmp_path: Path, option: str, n_ctx: int, n_batch: int, ram: int
) -> None:
    spawn = Spawner("fake:echo")
    m = llama(tmp_path)
    if option == "num_batch":  # a non-causal model: llama.cpp batches as much as it is told
        m.gguf.metadata["llama.attention.causal"] = False

    def memory() -> MachineMemory:
        return MachineMemory(available_ram=ram)

    async with Supervisor.open(settings(tmp_path), spawn=spawn, memory_probe=memory) as sup:
        big = LoadParams(model_path=m.model_path, n_ctx=n_ctx, n_batch=n_batch)
        with pytest.raises(PowerError) as excinfo:
            await collect(sup.request(m, big, None, gen("x")))
        assert excinfo.value.status == 400
        assert f'option "{option}" = {2**31 - 1} needs more memory' in str(excinfo.value)
        assert spawn.count == 0
        # the same model with its defaults still loads
        text, _ = await collect(sup.request(m, params(m), None, gen("still fits")))
        assert text.strip() == "still fits"


async def test_num_ctx_past_the_training_context_costs_only_the_training_context(
    tmp_path: Path,
) -> None:
    m = llama(tmp_path, **{"llama.context_length": 8192})
    async with Supervisor.open(
        settings(tmp_path), spawn=Spawner("fake:echo"), memory_probe=probe
    ) as sup:
        big = LoadParams(model_path=m.model_path, n_ctx=2**31 - 1, n_batch=2**31 - 1)
        text, _ = await collect(sup.request(m, big, None, gen("clamped like the runner")))
        assert text.strip() == "clamped like the runner"


async def test_a_prompt_too_large_for_a_frame_is_413_and_the_runner_lives_on(
    tmp_path: Path,
) -> None:
    spawn = Spawner("fake:echo")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        with pytest.raises(PowerError) as excinfo:
            await collect(sup.request(m, params(m), None, gen("x" * (MAX_FRAME + 1))))
        assert excinfo.value.status == 413
        assert "too large for the model runner" in str(excinfo.value)
        (slot,) = sup.loaded()
        assert slot.refcount == 0
        assert not slot.runner.client._streams  # nothing left waiting for an answer
        text, _ = await collect(sup.request(m, params(m), None, gen("after")))
        assert text.strip() == "after"
        assert spawn.count == 1


async def test_ps_shows_any_keep_alive_as_at_most_forever(tmp_path: Path) -> None:
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=Spawner("fake:echo")) as sup:
        await collect(sup.request(m, params(m), 1e308, gen("x")))
        (entry,) = ps_models(await sup.stats())
        expires = datetime.datetime.fromisoformat(entry.expires_at)
        assert expires.year > datetime.datetime.now().year + 200
