"""A model swap: the evicted runner's exit is waited for only when its memory is needed.

The evicted runners here are fake engines with ``hold_exit=1``: their processes do not end
until the test creates the model's ``.exit`` file, so "still exiting" lasts exactly as long as
the test says. The stop ladder is long (30 s) so that it does not end them first.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from power.store.model import LocalModel
from power.supervisor import Supervisor
from power.supervisor.memory import MachineMemory
from proto import LoadParams
from tests.support.spawn import Spawner, alive, collect, gen, model, params, settings
from tests.support.wait import wait_for

pytestmark = pytest.mark.anyio

GIB = 2**30


def let_exit(m: LocalModel) -> None:
    Path(m.model_path + ".exit").touch()


async def test_a_swap_loads_the_next_model_while_the_evicted_runner_exits(
    tmp_path: Path,
) -> None:
    spawn = Spawner("fake:echo?hold_exit=1")
    a, b = model(tmp_path, "a"), model(tmp_path, "b")
    cfg = settings(tmp_path, max_loaded_models=1, runner_stop_grace_s=30.0)

    def plenty() -> MachineMemory:
        return MachineMemory(available_ram=64 * GIB)

    async with Supervisor.open(cfg, spawn=spawn, memory_probe=plenty) as sup:
        await collect(sup.request(a, params(a), None, gen("one")))
        text, _ = await collect(sup.request(b, params(b), None, gen("two")))
        assert text == "two "
        # b loaded and answered while a's runner, evicted for the count, has not exited
        assert alive(spawn.pids[0])
        assert [x.model.name for x in sup.loaded()] == ["b:latest"]
        assert [x.model.name for x in sup.exiting()] == ["a:latest"]
        let_exit(a)
        await wait_for(lambda: not sup.exiting() and not alive(spawn.pids[0]))
        assert [(e.model, e.reason) for e in sup.status().recent_exits] == [("a:latest", "lru")]
        let_exit(b)


async def test_a_swap_that_needs_the_evicted_runners_memory_waits_for_its_exit(
    tmp_path: Path,
) -> None:
    spawn = Spawner("fake:echo?hold_exit=1")
    a, b = model(tmp_path, "a"), model(tmp_path, "b")
    cfg = settings(tmp_path, max_loaded_models=2, runner_stop_grace_s=30.0)
    probes_while_a_lives = 0

    def probe() -> MachineMemory:
        """No room beside a while its process lives (only what freeing it would give)."""
        nonlocal probes_while_a_lives
        if spawn.pids and alive(spawn.pids[0]):
            probes_while_a_lives += 1
            return MachineMemory(available_ram=256 * 2**20)  # (placement keeps this much free)
        return MachineMemory(available_ram=64 * GIB)

    async with Supervisor.open(cfg, spawn=spawn, memory_probe=probe) as sup:
        await collect(sup.request(a, params(a), None, gen("one")))
        load_b = asyncio.ensure_future(collect(sup.request(b, params(b), None, gen("two"))))
        # b's placement evicted a for memory, probed again with a still exiting, and waits
        await wait_for(lambda: probes_while_a_lives >= 2)
        assert [x.model.name for x in sup.exiting()] == ["a:latest"]
        assert not sup.loaded()
        assert not load_b.done()
        assert spawn.count == 1
        let_exit(a)
        text, _ = await load_b  # not "requires more system memory": a's memory came free
        assert text == "two "
        assert spawn.count == 2
        assert not alive(spawn.pids[0])
        assert [(e.model, e.reason) for e in sup.status().recent_exits] == [("a:latest", "memory")]
        let_exit(b)


async def test_a_model_split_over_rpc_workers_loads_only_once_the_previous_runner_has_exited(
    tmp_path: Path,
) -> None:
    """A llama.cpp RPC worker serves one client at a time: a second runner's connection would
    wait in its listen queue until the load timed out. So with workers, one runner at once,
    whatever ``max_loaded_models`` says, and the next waits for the previous one's exit."""
    spawn = Spawner("fake:echo?hold_exit=1")
    a, b = model(tmp_path, "a"), model(tmp_path, "b")
    cfg = settings(tmp_path, max_loaded_models=3, runner_stop_grace_s=30.0)

    def over(m: LocalModel) -> LoadParams:
        return msgspec.structs.replace(params(m), rpc_workers=("127.0.0.1:50052",))

    def plenty() -> MachineMemory:
        return MachineMemory(available_ram=64 * GIB)

    async with Supervisor.open(cfg, spawn=spawn, memory_probe=plenty) as sup:
        await collect(sup.request(a, over(a), None, gen("one")))
        load_b = asyncio.ensure_future(collect(sup.request(b, over(b), None, gen("two"))))
        await wait_for(lambda: [x.model.name for x in sup.exiting()] == ["a:latest"])
        await asyncio.sleep(0.5)  # (time for a load that does not wait to begin)
        assert not load_b.done()
        assert spawn.count == 1
        let_exit(a)
        text, _ = await load_b
        assert text == "two "
        assert not alive(spawn.pids[0])
        assert [(e.model, e.reason) for e in sup.status().recent_exits] == [("a:latest", "lru")]
        let_exit(b)
