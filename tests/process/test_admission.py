"""Admission control and placement: the real Supervisor, fake runners, a memory-budget seam."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from power.api.ps import ps_models
from power.errors import InsufficientMemoryError, ServerBusyError, ShuttingDownError
from power.store.model import LocalModel
from power.supervisor import Supervisor
from power.supervisor.memory import Gpu, MachineMemory, estimate
from proto import LoadParams
from tests.support.spawn import Spawner, collect, gen, model, params, settings
from tests.support.wait import wait_for

pytestmark = pytest.mark.anyio

HEADROOM = 256 * 2**20


def need_of(m: LocalModel) -> int:
    p = params(m)
    return estimate(
        {}, file_size=os.path.getsize(m.model_path), n_ctx=p.n_ctx, num_parallel=1, n_batch=512
    ).total


async def test_queue_full_is_503_and_covers_requests_to_a_loaded_model(tmp_path: Path) -> None:
    spawn = Spawner("fake:count?delay=0.02")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path, max_queue=2), spawn=spawn) as sup:
        running = asyncio.ensure_future(  # 3 s: time enough to queue two more on a busy machine
            collect(sup.request(m, params(m), None, gen("go", num_predict=150)))
        )
        await wait_for(lambda: bool(sup.loaded()) and sup.loaded()[0].refcount == 1)
        waiting = [
            asyncio.ensure_future(collect(sup.request(m, params(m), None, gen("x", num_predict=1))))
            for _ in range(2)
        ]
        await wait_for(lambda: sup.loaded()[0].queued == 2)
        with pytest.raises(ServerBusyError, match="maximum pending requests exceeded"):
            await collect(sup.request(m, params(m), None, gen("y", num_predict=1)))
        assert (await running)[1].reason == "length"
        assert [(await w)[0] for w in waiting] == ["1 ", "1 "]
        assert sup.loaded()[0].waits == 3  # the refused one never entered


async def test_a_request_past_its_deadline_fails_cleanly(tmp_path: Path) -> None:
    spawn = Spawner("fake:count?delay=0.02")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        busy = asyncio.ensure_future(
            collect(sup.request(m, params(m), None, gen("go", num_predict=40)))
        )
        await wait_for(lambda: bool(sup.loaded()) and sup.loaded()[0].refcount == 1)
        late = sup.request(m, params(m), None, gen("x", num_predict=1), deadline_s=0.1)
        with pytest.raises(ServerBusyError, match=r"waited 0\.1s"):
            await collect(late)
        slot = sup.loaded()[0]
        assert slot.queued == 0
        assert slot.refcount == 1
        await busy


async def test_a_client_that_gives_up_while_queued_leaves_the_queue(tmp_path: Path) -> None:
    spawn = Spawner("fake:count?delay=0.02")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        busy = asyncio.ensure_future(
            collect(sup.request(m, params(m), None, gen("go", num_predict=20)))
        )
        await wait_for(lambda: bool(sup.loaded()) and sup.loaded()[0].refcount == 1)
        queued = asyncio.ensure_future(collect(sup.request(m, params(m), None, gen("x"))))
        await wait_for(lambda: sup.loaded()[0].queued == 1)
        queued.cancel()
        await asyncio.gather(queued, return_exceptions=True)
        assert sup.loaded()[0].queued == 0
        await busy
        assert sup.loaded()[0].refcount == 0
        assert sup.loaded()[0].waits == 1


def budget_probe(
    sup_ref: list[Supervisor], fits: Callable[[int], int]
) -> Callable[[], MachineMemory]:
    """Free RAM as a function of how many runners are loaded."""

    def probe() -> MachineMemory:
        return MachineMemory(available_ram=fits(len(sup_ref[0].loaded()) if sup_ref else 0))

    return probe


async def test_idle_runners_are_evicted_until_the_new_model_fits_in_memory(tmp_path: Path) -> None:
    spawn = Spawner("fake:echo")
    a, b = model(tmp_path, "a"), model(tmp_path, "b")
    need = need_of(a)
    ref: list[Supervisor] = []
    # room for exactly one runner, whatever max_loaded_models says
    probe = budget_probe(ref, lambda loaded: HEADROOM + need - loaded * need)
    async with Supervisor.open(settings(tmp_path), spawn=spawn, memory_probe=probe) as sup:
        ref.append(sup)
        await collect(sup.request(a, params(a), None, gen("x")))
        await collect(sup.request(b, params(b), None, gen("y")))
        assert [s.model.name for s in sup.loaded()] == ["b:latest"]
        assert spawn.count == 2


async def test_a_model_that_cannot_fit_even_alone_is_a_clear_error(tmp_path: Path) -> None:
    spawn = Spawner("fake:echo")
    m = model(tmp_path)
    probe = budget_probe([], lambda _: HEADROOM + need_of(m) // 2)
    async with Supervisor.open(settings(tmp_path), spawn=spawn, memory_probe=probe) as sup:
        with pytest.raises(InsufficientMemoryError, match="requires more system memory"):
            await collect(sup.request(m, params(m), None, gen("x")))
        assert spawn.count == 0


async def test_a_model_split_over_rpc_workers_is_not_held_to_this_machines_ram(
    tmp_path: Path,
) -> None:
    spawn = Spawner("fake:echo")
    m = model(tmp_path)
    probe = budget_probe([], lambda _: HEADROOM + need_of(m) // 2)
    split = msgspec.structs.replace(params(m), rpc_workers=("10.0.0.7:50052",))
    async with Supervisor.open(settings(tmp_path), spawn=spawn, memory_probe=probe) as sup:
        await collect(sup.request(m, split, None, gen("x")))
        assert [s.model.name for s in sup.loaded()] == [m.name]
        assert spawn.count == 1


def one_gpu_probe(free_vram: int) -> Callable[[], MachineMemory]:
    """A machine with 64 GiB of RAM and an 80 GiB GPU with ``free_vram`` free (none for 0)."""
    gpus = (Gpu(0, "Test GPU", 80 * 2**30, free_vram, "cuda"),) if free_vram else ()
    return lambda: MachineMemory(available_ram=64 * 2**30, gpus=gpus)


@pytest.mark.parametrize(("free_vram", "expect_all"), [(0, False), (64 * 2**30, True)])
async def test_gpu_layers_follow_free_vram_when_num_gpu_is_unset(
    tmp_path: Path, free_vram: int, expect_all: bool
) -> None:
    spawn = Spawner("fake:echo")
    m = model(tmp_path)
    probe = one_gpu_probe(free_vram)
    async with Supervisor.open(settings(tmp_path), spawn=spawn, memory_probe=probe) as sup:
        auto = LoadParams(model_path=m.model_path, n_ctx=512, n_gpu_layers=-1)
        await collect(sup.request(m, auto, None, gen("x")))
        (slot,) = sup.loaded()
        assert slot.params.n_gpu_layers == (2 if expect_all else 0)  # 1 block + output layer


@pytest.mark.parametrize("free_vram", [0, 64 * 2**30])
async def test_asking_again_for_what_placement_changed_does_not_reload(
    tmp_path: Path, free_vram: int
) -> None:
    """``num_gpu 999`` places the model's 2 layers, or none without a GPU; ``main_gpu 3`` of one
    GPU places on GPU 0. The next request asking the same is served by the same runner."""
    spawn = Spawner("fake:echo")
    m = model(tmp_path)
    probe = one_gpu_probe(free_vram)
    async with Supervisor.open(settings(tmp_path), spawn=spawn, memory_probe=probe) as sup:
        many = LoadParams(model_path=m.model_path, n_ctx=512, n_gpu_layers=999, main_gpu=3)
        for _ in range(3):
            await collect(sup.request(m, many, None, gen("x")))
        (slot,) = sup.loaded()
        assert slot.params.n_gpu_layers == (2 if free_vram else 0)
        assert spawn.count == 1
        fewer = msgspec.structs.replace(many, n_gpu_layers=1)  # (a real change still reloads)
        await collect(sup.request(m, fewer, None, gen("x")))
        assert spawn.count == 2


async def test_an_idle_runner_holding_vram_is_evicted_so_the_next_model_fits_the_gpu(
    tmp_path: Path,
) -> None:
    spawn = Spawner("fake:echo")
    a, b = model(tmp_path, "a"), model(tmp_path, "b")
    mib = 2**20
    ref: list[Supervisor] = []

    def probe() -> MachineMemory:  # one GPU with room for one model; each runner holds 100 MiB
        used = {slot.runner.pid: 100 * mib for slot in ref[0].loaded()} if ref else {}
        gpu = Gpu(0, "Test GPU", 160 * mib, 150 * mib - sum(used.values()), "cuda")
        return MachineMemory(available_ram=64 * 2**30, gpus=(gpu,), vram_by_pid=used)

    async with Supervisor.open(settings(tmp_path), spawn=spawn, memory_probe=probe) as sup:
        ref.append(sup)

        def auto(m: LocalModel) -> LoadParams:
            return LoadParams(model_path=m.model_path, n_ctx=512, n_gpu_layers=-1)

        await collect(sup.request(a, auto(a), None, gen("x")))
        (first,) = sup.loaded()
        assert (first.vram, first.all_on_gpu) == (100 * mib, True)
        await collect(sup.request(b, auto(b), None, gen("y")))
        (second,) = sup.loaded()
        assert second.model.name == "b:latest"
        assert second.params.n_gpu_layers == 2  # whole: 1 block + output layer
        (row,) = ps_models(await sup.stats())
        assert row.size == row.size_vram == 100 * mib


async def test_ps_shows_the_vram_the_driver_counts_now_not_at_the_loads_end(
    tmp_path: Path,
) -> None:
    """A CUDA runner's first decodes take more VRAM than the load left it holding (seen on an
    H200: 808 MiB after the load, 880 MiB after an answer): ``/api/ps`` asks the driver again,
    at most once per ``VRAM_REFRESH_S``."""
    spawn = Spawner("fake:echo")
    m = model(tmp_path)
    mib = 2**20
    held = [100 * mib]
    probes: list[int] = []
    ref: list[Supervisor] = []

    def probe() -> MachineMemory:
        probes.append(1)
        used = {slot.runner.pid: held[0] for slot in ref[0].loaded()} if ref else {}
        gpu = Gpu(0, "Test GPU", 8192 * mib, 8192 * mib - sum(used.values()), "cuda")
        return MachineMemory(available_ram=64 * 2**30, gpus=(gpu,), vram_by_pid=used)

    async with Supervisor.open(settings(tmp_path), spawn=spawn, memory_probe=probe) as sup:
        ref.append(sup)
        auto = LoadParams(model_path=m.model_path, n_ctx=512, n_gpu_layers=-1)
        await collect(sup.request(m, auto, None, gen("x")))
        held[0] = 172 * mib  # (what the answer's decodes added)
        (row,) = ps_models(await sup.stats())
        assert row.size == row.size_vram == 172 * mib
        before = len(probes)
        held[0] = 200 * mib
        (row,) = ps_models(await sup.stats())  # within VRAM_REFRESH_S: no second nvidia-smi
        assert (row.size_vram, len(probes)) == (172 * mib, before)


async def test_draining_refuses_new_requests_and_the_cut_ends_running_and_waiting_ones(
    tmp_path: Path,
) -> None:
    spawn = Spawner("fake:count?delay=0.02")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        running = asyncio.ensure_future(
            collect(sup.request(m, params(m), None, gen("go", num_predict=5000)))
        )
        await wait_for(lambda: bool(sup.loaded()) and sup.loaded()[0].refcount == 1)
        waiting = asyncio.ensure_future(collect(sup.request(m, params(m), None, gen("x"))))
        await wait_for(lambda: sup.loaded()[0].queued == 1)
        assert sup.drain() == 2
        with pytest.raises(ShuttingDownError, match="server is shutting down"):
            await collect(sup.request(m, params(m), None, gen("new")))
        assert not running.done()  # in flight: they may still finish
        assert not waiting.done()
        assert sup.cut() == 1  # one was generating
        for task in (running, waiting):
            with pytest.raises(ShuttingDownError, match=r"cut short|shutting down"):
                await task
        slot = sup.loaded()[0]
        assert (slot.refcount, slot.queued) == (0, 0)


async def test_a_model_that_cannot_fit_even_alone_evicts_nothing(tmp_path: Path) -> None:
    spawn = Spawner("fake:echo")
    a, b = model(tmp_path, "a"), model(tmp_path, "b")
    probe = budget_probe([], lambda _: HEADROOM + need_of(a) * 3)
    async with Supervisor.open(settings(tmp_path), spawn=spawn, memory_probe=probe) as sup:
        await collect(sup.request(a, params(a), None, gen("x")))
        os.truncate(b.model_path, 1 << 40)  # (sparse) weights far larger than the machine
        with pytest.raises(InsufficientMemoryError, match="requires more system memory"):
            await collect(sup.request(b, params(b), None, gen("y")))
        assert [s.model.name for s in sup.loaded()] == ["a:latest"]  # still loaded
        assert spawn.count == 1
