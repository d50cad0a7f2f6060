"""Where a model goes: room made for it (by count and by memory) and its layers placed on GPUs.

The estimate and the placement arithmetic are pure (``memory``), the victim order is policy
(``policy.pick_victim``); this is the loop that evicts idle runners, waits for busy ones (and for
evicted ones to exit when their memory is needed), and refuses at once (evicting nothing) a model
that could not fit even alone.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import msgspec

from power.errors import InsufficientMemoryError
from power.supervisor import memory, policy
from power.supervisor.memory import MemoryProbe
from power.supervisor.record import LoadedRunner
from proto import LoadParams

if TYPE_CHECKING:
    from power.settings import Settings
    from power.store.model import LocalModel

__all__ = ["Placed", "Placer", "Pool"]

_RAM_HEADROOM = 256 * 2**20
VRAM_REFRESH_S = 2.0  # how stale /api/ps's size_vram may be: one nvidia-smi at most this often


class Pool(Protocol):
    """The runners a placement may make room among (the supervisor)."""

    def live(self) -> list[LoadedRunner]: ...

    async def evict(self, loaded: LoadedRunner, reason: str) -> None:
        """Unload ``loaded`` to make room: ``reason`` "lru" (the count) or "memory". It no
        longer counts among ``live()`` when this returns, but may still be ``exiting()``."""
        ...

    def exiting(self) -> list[LoadedRunner]:
        """Runners told to stop whose processes have not exited yet: the memory they hold is
        not free yet."""
        ...

    async def wait_for_change(self) -> None:
        """Until some runner becomes idle, stops or exits."""
        ...


@dataclass(frozen=True, slots=True)
class Placed:
    params: LoadParams  # with the GPU placement filled in
    where: memory.Placement
    need_ram: int  # the RAM it is estimated to take


class Placer:
    def __init__(self, settings: Settings, probe: MemoryProbe, pool: Pool) -> None:
        self._settings = settings
        self._probe = probe
        self._pool = pool
        self._vram_probed = -VRAM_REFRESH_S

    async def place(self, model: LocalModel, params: LoadParams) -> Placed:
        """Make room for one more runner and place it.

        Idle runners are unloaded, least valuable first, until the new model's estimate fits in
        free RAM and the count is under ``max_loaded_models``, and, where idle runners hold
        VRAM, until every layer fits on the GPUs; busy runners are waited for. An evicted
        runner's exit is waited for only when the memory it holds is needed: a swap under
        ``max_loaded_models`` with RAM to spare loads while the old runner exits. A model that
        cannot fit even with nothing else loaded is an error at once (nothing is evicted for
        it), not an OOM kill. A model with RPC workers is not held to this machine's RAM: its
        runner puts here only the share of the layers that this machine's free RAM is of all
        the memory the workers and it report. Since a worker serves one client at a time, such
        a model loads only once every other runner has exited.
        """
        s = self._settings
        limit = max(1, s.max_loaded_models)
        if params.rpc_workers:  # a llama.cpp RPC worker serves one client (runner) at a time
            limit = 1
        metadata = getattr(getattr(model, "gguf", None), "metadata", None) or {}
        file_size = sum(map(_file_size, (params.model_path, params.projector_path)))
        est = memory.estimate(
            metadata,
            file_size=file_size,
            n_ctx=params.n_ctx,
            num_parallel=params.num_parallel,
            n_batch=params.n_batch,
            kv_cache_type=params.kv_cache_type,
            embedding=params.embedding,
        )
        while True:
            live = self._pool.live()
            # (before the probe: a runner that exits while it runs may still be counted in it)
            exiting = self._pool.exiting()
            machine = await asyncio.to_thread(self._probe)
            where = memory.place(
                est,
                machine.gpus,
                overhead=s.gpu_overhead,
                spread=s.sched_spread,
                layers=params.n_gpu_layers,
                main_gpu=params.main_gpu,
            )
            # A model split over RPC workers: its runner sizes this machine's share of the layers
            # by the RAM free when it loads (runner.rpc), so only the count limit applies here.
            need_ram = 0 if params.rpc_workers else est.total - where.on_gpu
            room = machine.available_ram - _RAM_HEADROOM
            if params.rpc_workers and exiting and len(live) < limit:
                # the workers serve the evicted runner until its connection closes: a load now
                # would wait in their listen queue
                await self._settle(exiting)
                continue
            if len(live) < limit and need_ram <= room:
                victim = None
                if not where.whole and any(x.vram > 0 for x in exiting):
                    await self._settle(exiting)  # its VRAM is about to be free
                    continue
                if not where.whole:  # Ollama evicts rather than leave layers on the CPU
                    holders = (x for x in live if x.usable and x.vram > 0)
                    victim = policy.pick_victim(x.snapshot() for x in holders)
                if victim is None:
                    placed = msgspec.structs.replace(
                        params,
                        n_gpu_layers=where.n_gpu_layers,
                        main_gpu=where.main_gpu,
                        split_mode=where.split_mode,
                        tensor_split=where.tensor_split,
                    )
                    return Placed(placed, where, need_ram)
                await self._evict(live, victim.key, "memory")  # (VRAM)
                continue
            if need_ram > room and exiting:  # the RAM of an evicted runner is about to be free
                await self._settle(exiting)
                continue
            if need_ram > room:  # would it fit even with every other runner gone?
                alone = room + await asyncio.to_thread(_freeable, live)
                if not live or need_ram > alone:  # then evict nothing for it
                    memory.blame_options(metadata, params, file_size=file_size, need=need_ram,
                                         room=alone, default_ctx=s.default_num_ctx)  # fmt: skip
                    raise InsufficientMemoryError(
                        f"model requires more system memory ({_gib(need_ram)}) than is"
                        f" available ({_gib(max(0, alone))})"
                    )
            victim = policy.pick_victim(x.snapshot() for x in live if x.usable)
            if victim is not None:
                await self._evict(live, victim.key, "memory" if need_ram > room else "lru")
                continue
            await self._pool.wait_for_change()  # every runner is busy (or stopping)

    async def _evict(self, live: list[LoadedRunner], key: str, reason: str) -> None:
        await self._pool.evict(next(x for x in live if x.key == key), reason)

    async def _settle(self, exiting: list[LoadedRunner]) -> None:
        """Until one of ``exiting`` has exited (at once if one has since the probe)."""
        if all(x in self._pool.exiting() for x in exiting):
            await self._pool.wait_for_change()

    async def refresh_vram(self, runners: list[LoadedRunner]) -> None:
        """Each runner's VRAM as the driver says it is now, for ``/api/ps`` and the metrics: a
        CUDA runner takes more than it held at the load's end with its first decodes (cuBLAS's
        workspace, CUDA graphs), ~70 MiB on an H200. One probe (an ``nvidia-smi`` process) at
        most every ``VRAM_REFRESH_S``, and only while a runner holds VRAM."""
        on_gpu = [x for x in runners if x.vram > 0]
        now = time.monotonic()
        if not on_gpu or now - self._vram_probed < VRAM_REFRESH_S:
            return
        self._vram_probed = now
        machine = await asyncio.to_thread(self._probe)
        if machine.vram_by_pid is None:
            return
        for loaded in on_gpu:
            held = machine.vram_by_pid.get(loaded.runner.pid, 0)
            if held > 0:  # (0: it exited meanwhile, or the driver lists no such process)
                loaded.vram = held

    async def measure_vram(self, loaded: LoadedRunner, on_gpu: int) -> int:
        """The runner's VRAM: the driver's per-process figure where there is one (NVIDIA),
        else the runner's own report, else the placement's estimate (Metal's unified memory)."""
        ready = loaded.runner.ready
        reported = ready.memory.vram if ready is not None else 0
        if on_gpu <= 0 and reported <= 0:
            return 0
        machine = await asyncio.to_thread(self._probe)
        if machine.vram_by_pid is not None:
            return machine.vram_by_pid.get(loaded.runner.pid, 0)
        return reported or on_gpu


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _freeable(runners: list[LoadedRunner]) -> int:
    """What unloading these runners would free: each one's estimate, or its resident memory
    now if that is more."""
    return sum(max(x.need_ram, x.runner.stats_rss()) for x in runners)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
