"""The supervisor: which runners exist, who is using them, and when they go away.

Mechanism lives here, policy in ``policy.py``. One lock serialises loads (so concurrent cold
requests for one model load it once); requests to a loaded model never touch it. A lease bumps
a runner's refcount; at zero the keep_alive timer is armed. A watcher per runner turns its exit
into state (and an error for whoever was using it); a pinger catches a runner that is alive but
no longer answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from power.aio import Interrupted, until
from power.errors import (
    InsufficientMemoryError,
    RunnerCrashedError,
    RunnerError,
    RunnerTimeoutError,
    ServerBusyError,
    ShuttingDownError,
)
from power.supervisor import memory, policy
from power.supervisor.memory import MemoryProbe, probe_machine
from power.supervisor.process import RunnerProcess, describe_exit
from power.supervisor.spare import SparePool
from proto import CpuMode, FromRunner, LoadParams, Msg

if TYPE_CHECKING:
    from power.config import Settings
    from power.store.model import LocalModel

__all__ = ["Loaded", "RequestTiming", "RunnerFactory", "Supervisor", "runner_key"]

log = logging.getLogger(__name__)


class RunnerFactory(Protocol):
    async def __call__(self, params: LoadParams, *, model: str) -> RunnerProcess: ...


@dataclass(slots=True)
class RequestTiming:
    """Filled in by ``Supervisor.request``: time spent obtaining a runner, and which one."""

    load_s: float = 0.0
    pid: int = 0


@dataclass(eq=False)
class Loaded:
    """One loaded runner and its scheduling state."""

    key: str
    model: LocalModel
    params: LoadParams
    runner: RunnerProcess
    keep_alive_s: float
    loaded_at: float
    last_used: float
    refcount: int = 0
    expires_at: float | None = None  # monotonic; None while busy or when kept forever
    stopping: bool = False
    dead: bool = False
    reason: str = ""  # why it is stopping: expired, evicted, reload, shutdown, unloaded
    timer: asyncio.TimerHandle | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    seats: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    queued: int = 0  # requests waiting for a seat (one of the runner's parallel sequences)
    waits: int = 0
    wait_total_s: float = 0.0
    vram: int = 0  # bytes of GPU memory the runner holds, measured after loading
    all_on_gpu: bool = False  # every layer offloaded
    need_ram: int = 0  # the RAM it was estimated to take when placed
    # every model this runner served (same weights, several names), with its own num_ctx
    served: dict[str, tuple[LocalModel, int]] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return not (self.stopping or self.dead)

    def snapshot(self) -> policy.RunnerSnapshot:
        return policy.RunnerSnapshot(
            key=self.key,
            name=self.model.name,
            refcount=self.refcount,
            keep_alive_s=self.keep_alive_s,
            last_used=self.last_used,
        )


_RAM_HEADROOM = 256 * 2**20
# Signals a fault in native code dies of (a bad kernel, an unsupported instruction, a bad page)
_KERNEL_FAULTS = frozenset({signal.SIGSEGV, signal.SIGILL, signal.SIGBUS})


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _freeable(slots: list[Loaded]) -> int:
    """What unloading these runners would free: each one's estimate, or its resident memory
    now if that is more."""
    return sum(max(slot.need_ram, slot.runner.stats_rss()) for slot in slots)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def runner_key(params: LoadParams) -> str:
    parts = (params.model_path, *params.lora_paths)
    return "\0".join((*parts, params.projector_path) if params.projector_path else parts)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        spawn: RunnerFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        memory_probe: MemoryProbe = probe_machine,
    ) -> None:
        self.settings = settings
        # what runners are asked to load in, unless a model fell back (below)
        self.cpu_mode = policy.requested_cpu_mode(settings.cpu_extra_buffers)
        self._plain: set[str] = set()  # runner keys whose CPU kernels crashed: plain buffers
        self._pool = (
            None if spawn is not None else SparePool(settings, keep_spare=settings.runner_spare)
        )
        self._spawn: RunnerFactory = spawn or self._pool  # type: ignore[assignment]
        self._clock = clock
        self._probe = memory_probe
        self._waiting = 0  # requests waiting anywhere: for a load or for a seat
        self._slots: dict[str, Loaded] = {}
        self._load_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._pending = 0
        self._tg: asyncio.TaskGroup | None = None
        self._draining = False  # stopping: new requests are refused
        self._cut = asyncio.Event()  # the grace period is over: what still runs is ended

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        settings: Settings,
        *,
        spawn: RunnerFactory | None = None,
        force: asyncio.Event | None = None,
        memory_probe: MemoryProbe = probe_machine,
    ) -> AsyncIterator[Supervisor]:
        self = cls(settings, spawn=spawn, memory_probe=memory_probe)
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            if self._pool is not None:
                self._pool.start()
            try:
                yield self
            finally:
                await self.aclose(force=force is not None and force.is_set())

    # ------------------------------------------------------------------ leases

    async def acquire(
        self, model: LocalModel, params: LoadParams, keep_alive_s: float | None
    ) -> Loaded:
        """A runner for ``model`` that serves ``params``, loading it if needed; refcount + 1."""
        if self._draining:
            raise ShuttingDownError()
        key = runner_key(params)
        mode = CpuMode.PLAIN if key in self._plain else self.cpu_mode
        params = msgspec.structs.replace(params, cpu_mode=mode)
        slot = self._slots.get(key)
        if slot is not None and slot.usable and policy.serves(slot.params, params):
            self._attach(slot, model, params, keep_alive_s)
            return slot
        if self._pending >= self.settings.max_queue:
            raise ServerBusyError()
        self._pending += 1
        try:
            async with self._load_lock:
                slot = self._slots.get(key)
                if slot is not None and slot.usable and policy.serves(slot.params, params):
                    self._attach(slot, model, params, keep_alive_s)
                    return slot
                if slot is not None:
                    await self._retire(slot, "reload", wait_idle=True)
                params, where, need_ram = await self._place(model, params)
                try:
                    slot = await self._load(key, model, params, keep_alive_s)
                except RunnerCrashedError as exc:  # (a load that failed cleanly is not retried)
                    log.warning("runner died while loading %s; once more: %s", model.name, exc)
                    slot = await self._load(key, model, params, keep_alive_s)
                slot.need_ram = need_ram
                slot.vram = await self._measure_vram(slot, where.on_gpu)
                slot.all_on_gpu = where.whole and where.n_gpu_layers > 0
                self._attach(slot, model, params, keep_alive_s)
                return slot
        finally:
            self._pending -= 1

    def release(self, slot: Loaded) -> None:
        """Synchronous, so it can run from any cleanup path."""
        slot.refcount -= 1
        slot.last_used = self._clock()
        if slot.refcount > 0 or not slot.usable:
            self._notify()
            return
        deadline = policy.expiry_deadline(slot.last_used, slot.keep_alive_s)
        slot.expires_at = deadline
        if deadline is not None:
            if slot.keep_alive_s <= 0:
                self._spawn_task(self._retire(slot, "expired"))
            else:
                loop = asyncio.get_running_loop()
                slot.timer = loop.call_later(slot.keep_alive_s, self._expire, slot)
        self._notify()

    @contextlib.asynccontextmanager
    async def lease(
        self, model: LocalModel, params: LoadParams, keep_alive_s: float | None
    ) -> AsyncIterator[Loaded]:
        slot = await self.acquire(model, params, keep_alive_s)
        try:
            yield slot
        finally:
            self.release(slot)

    async def request(
        self,
        model: LocalModel,
        params: LoadParams,
        keep_alive_s: float | None,
        build: Callable[[int], Msg],
        timing: RequestTiming | None = None,
        deadline_s: float | None = None,
    ) -> AsyncIterator[list[FromRunner]]:
        """Run one request, yielding batches of its replies until the terminal one.

        If the runner dies before the request produced anything, it is retried once on a fresh
        runner, transparently. Closing the iterator early cancels the request on the runner.
        """
        for attempt in (0, 1):
            started = self._clock()
            slot = await self._enter(model, params, keep_alive_s, deadline_s)
            if timing is not None:
                timing.load_s += self._clock() - started
                timing.pid = slot.runner.pid
            stream = None
            produced = False
            try:
                stream = slot.runner.client.open(build)
                while not stream.finished:
                    try:
                        batch = await stream.next_batch()
                    except StopAsyncIteration:
                        return
                    produced = True
                    yield batch
                return
            except RunnerCrashedError as exc:
                if produced or attempt == 1:
                    raise
                log.warning("retrying on a fresh runner for %s: %s", model.name, exc)
            finally:
                if stream is not None:
                    stream.close()
                slot.seats.release()
                self.release(slot)

    async def _enter(
        self,
        model: LocalModel,
        params: LoadParams,
        keep_alive_s: float | None,
        deadline_s: float | None,
    ) -> Loaded:
        """Admission: a lease plus a seat, within the queue bound and the request's deadline;
        ``ShuttingDownError`` when the daemon stops first."""
        if self._draining:
            raise ShuttingDownError()
        if self._waiting >= self.settings.max_queue:
            raise ServerBusyError()
        self._waiting += 1
        try:
            slot = await until(self._seat(model, params, keep_alive_s, deadline_s), self._cut)
        except Interrupted:
            raise ShuttingDownError() from None
        finally:
            self._waiting -= 1
        if self._cut.is_set():  # seated by the cut itself (a seat it freed): too late to start
            slot.seats.release()
            self.release(slot)
            raise ShuttingDownError()
        return slot

    async def _seat(
        self,
        model: LocalModel,
        params: LoadParams,
        keep_alive_s: float | None,
        deadline_s: float | None,
    ) -> Loaded:
        deadline = self.settings.queue_timeout_s if deadline_s is None else deadline_s
        slot: Loaded | None = None
        seated = False
        waited_from = self._clock()
        try:
            async with asyncio.timeout(None if math.isinf(deadline) else deadline):
                slot = await self.acquire(model, params, keep_alive_s)
                slot.queued += 1
                try:
                    await slot.seats.acquire()
                    seated = True
                finally:
                    slot.queued -= 1
            slot.waits += 1
            slot.wait_total_s += self._clock() - waited_from
            return slot
        except TimeoutError:
            raise ServerBusyError(
                f"server busy: request waited {deadline:g}s for model {model.name}"
            ) from None
        finally:
            if slot is not None and not seated:
                self.release(slot)

    def _attach(
        self, slot: Loaded, model: LocalModel, params: LoadParams, keep_alive_s: float | None
    ) -> None:
        slot.served[model.name] = (model, params.n_ctx)  # (models may share one runner)
        slot.refcount += 1
        slot.expires_at = None
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        if keep_alive_s is not None:
            slot.keep_alive_s = keep_alive_s

    # ------------------------------------------------------------------ loading and unloading

    async def _load(
        self, key: str, model: LocalModel, params: LoadParams, keep_alive_s: float | None
    ) -> Loaded:
        runner = await self._spawn(params, model=model.name)
        now = self._clock()
        slot = Loaded(
            key=key,
            model=model,
            params=params,
            runner=runner,
            keep_alive_s=self.settings.keep_alive_s if keep_alive_s is None else keep_alive_s,
            loaded_at=now,
            last_used=now,
        )
        ready = runner.ready
        slot.seats = asyncio.Semaphore(ready.num_parallel if ready is not None else 1)
        self._slots[key] = slot
        slot.tasks.append(self._spawn_task(self._watch(slot)))
        slot.tasks.append(self._spawn_task(self._ping(slot)))
        return slot

    async def _place(
        self, model: LocalModel, params: LoadParams
    ) -> tuple[LoadParams, memory.Placement, int]:
        """Make room for one more runner, by count and by memory, and place it on the GPUs.

        Idle runners are unloaded, least valuable first, until the new model's estimate fits in
        free RAM and the count is under ``max_loaded_models``, and, where idle runners hold
        VRAM, until every layer fits on the GPUs; busy runners are waited for. A model that
        cannot fit even with nothing else loaded is an error at once (nothing is evicted for
        it), not an OOM kill. Returns the params with the placement, the placement, and the RAM
        the model is estimated to take.
        """
        s = self.settings
        limit = max(1, s.max_loaded_models)
        metadata = getattr(getattr(model, "gguf", None), "metadata", None) or {}
        file_size = sum(map(_file_size, (params.model_path, params.projector_path)))
        est = memory.estimate(
            metadata,
            file_size=file_size,
            n_ctx=params.n_ctx,
            num_parallel=params.num_parallel,
            n_batch=params.n_batch,
            kv_cache_type=params.kv_cache_type,
        )
        while True:
            live = [slot for slot in self._slots.values() if not slot.dead]
            machine = await asyncio.to_thread(self._probe)
            where = memory.place(
                est,
                machine.gpus,
                overhead=s.gpu_overhead,
                spread=s.sched_spread,
                layers=params.n_gpu_layers,
                main_gpu=params.main_gpu,
            )
            need_ram = est.total - where.on_gpu
            room = machine.available_ram - _RAM_HEADROOM
            holders = [slot for slot in live if slot.usable and slot.vram > 0]
            if len(live) < limit and need_ram <= room:
                victim = None
                if not where.whole:  # Ollama evicts rather than leave layers on the CPU
                    victim = policy.pick_victim(slot.snapshot() for slot in holders)
                if victim is None:
                    placed = msgspec.structs.replace(
                        params,
                        n_gpu_layers=where.n_gpu_layers,
                        main_gpu=where.main_gpu,
                        split_mode=where.split_mode,
                        tensor_split=where.tensor_split,
                    )
                    return placed, where, need_ram
                await self._retire(self._slots[victim.key], "evicted")
                continue
            if need_ram > room:  # would it fit even with every other runner gone?
                freeable = await asyncio.to_thread(_freeable, live)
                alone = room + freeable
                if not live or need_ram > alone:  # then evict nothing for it
                    memory.blame_options(metadata, params, file_size=file_size, need=need_ram,
                                         room=alone, default_ctx=s.context_length)  # fmt: skip
                    raise InsufficientMemoryError(
                        f"model requires more system memory ({_gib(need_ram)}) than is"
                        f" available ({_gib(max(0, alone))})"
                    )
            victim = policy.pick_victim(slot.snapshot() for slot in live if slot.usable)
            if victim is not None:
                await self._retire(self._slots[victim.key], "evicted")
                continue
            async with self._changed:  # every runner is busy (or stopping): wait for a change
                await self._changed.wait()

    async def _measure_vram(self, slot: Loaded, on_gpu: int) -> int:
        """The runner's VRAM: the driver's per-process figure where there is one (NVIDIA),
        else the runner's own report, else the placement's estimate (Metal's unified memory)."""
        ready = slot.runner.ready
        reported = ready.memory.vram if ready is not None else 0
        if on_gpu <= 0 and reported <= 0:
            return 0
        machine = await asyncio.to_thread(self._probe)
        if machine.vram_by_pid is not None:
            return machine.vram_by_pid.get(slot.runner.pid, 0)
        return reported or on_gpu

    async def _retire(self, slot: Loaded, reason: str, *, wait_idle: bool = False) -> None:
        if wait_idle:
            async with self._changed:
                await self._changed.wait_for(lambda: slot.refcount == 0 or slot.dead)
        if slot.refcount > 0 and not wait_idle:
            return  # someone attached since this was scheduled: it is not idle any more
        if not slot.stopping:
            slot.stopping = True
            slot.reason = reason
            if slot.timer is not None:
                slot.timer.cancel()
        if self._slots.get(slot.key) is slot:
            del self._slots[slot.key]
        s = self.settings
        await slot.runner.aclose(grace_s=s.runner_stop_grace_s, term_grace_s=s.runner_term_grace_s)

    def _expire(self, slot: Loaded) -> None:
        slot.timer = None
        if slot.refcount == 0 and slot.usable:
            self._spawn_task(self._retire(slot, "expired"))

    async def unload(self, key: str) -> bool:
        """``power stop``: unload now if idle, else as soon as the last request ends."""
        slot = self._slots.get(key)
        if slot is None:
            return False
        slot.keep_alive_s = 0.0
        if slot.refcount == 0:
            await self._retire(slot, "unloaded")
        return True

    async def _watch(self, slot: Loaded) -> None:
        rc = await slot.runner.wait_exited()
        slot.dead = True
        if slot.timer is not None:
            slot.timer.cancel()
        if self._slots.get(slot.key) is slot:
            del self._slots[slot.key]
        if slot.stopping:
            log.info(
                "runner unloaded: model=%s pid=%d reason=%s (%s)",
                slot.model.name,
                slot.runner.pid,
                slot.reason,
                describe_exit(rc),
            )
            error: RunnerError = RunnerError(
                f"model {slot.model.name} was unloaded ({slot.reason})", model=slot.model.name
            )
        else:
            error = slot.runner.crash_error(rc)
            log.error("%s", error)
            self._fall_back(slot, rc)  # before the requests fail: their retry loads plain
        slot.runner.client.fail_all(error)
        for task in slot.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await slot.runner.aclose(grace_s=0, term_grace_s=0)
        self._notify()

    def _fall_back(self, slot: Loaded, returncode: int) -> None:
        """A runner killed by a CPU fault before its first decode finished: llama.cpp's CPU
        kernels are suspected, so this model loads with plain buffers from now on."""
        if -returncode not in _KERNEL_FAULTS or slot.runner.client.decoded:
            return
        ready = slot.runner.ready
        if ready is None or ready.cpu_mode == CpuMode.PLAIN or slot.key in self._plain:
            return
        self._plain.add(slot.key)
        log.warning(
            "model runner for %s (pid %d) died of %s in its first decode in CPU mode %s;"
            " llama.cpp's CPU kernels are suspected, so %s now loads in CPU mode plain"
            " (no extra buffer types) for the rest of this daemon's life. Its last lines: %s",
            slot.model.name,
            slot.runner.pid,
            signal.Signals(-returncode).name,
            ready.cpu_mode,
            slot.model.name,
            " | ".join(slot.runner.stderr_lines[-5:]) or "(none)",
        )

    async def _ping(self, slot: Loaded) -> None:
        s = self.settings
        while not slot.dead:
            await asyncio.sleep(s.ping_interval_s)
            try:
                await slot.runner.client.ping(s.ping_timeout_s)
            except TimeoutError:
                error = RunnerTimeoutError(
                    f"model runner for {slot.model.name} (pid {slot.runner.pid}) stopped"
                    f" responding for {s.ping_timeout_s:.0f}s and was killed",
                    model=slot.model.name,
                    pid=slot.runner.pid,
                    stderr_tail=slot.runner.stderr_lines,
                )
                log.error("%s", error)
                slot.runner.client.fail_all(error)
                slot.stopping, slot.reason = True, "hung"
                slot.runner.kill_nowait()
                return
            except Exception:
                return  # the watcher reports the exit

    # ------------------------------------------------------------------ stopping

    def drain(self) -> int:
        """Refuse new requests from now on; returns how many are in flight or waiting."""
        self._draining = True
        return self._waiting + sum(slot.refcount - slot.queued for slot in self.loaded())

    def cut(self) -> int:
        """End every request still in flight or waiting with ``ShuttingDownError`` (each is
        cancelled on its runner); returns how many were running."""
        self._draining = True
        self._cut.set()
        error = ShuttingDownError("server is shutting down: the request was cut short")
        return sum(slot.runner.client.fail_requests(error) for slot in self.loaded())

    # ------------------------------------------------------------------ state

    def loaded(self) -> list[Loaded]:
        return [s for s in self._slots.values() if not s.dead]

    def _notify(self) -> None:
        self._spawn_task(self._notify_async())

    async def _notify_async(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        if self._tg is None:
            return asyncio.ensure_future(coro)
        return self._tg.create_task(coro)

    async def aclose(self, *, force: bool = False) -> None:
        """Stop every runner in parallel under one deadline; always reap."""
        slots = list(self._slots.values())
        for slot in slots:
            slot.stopping, slot.reason = True, "shutdown"
            if slot.timer is not None:
                slot.timer.cancel()
        s = self.settings
        grace = 0.0 if force else s.runner_stop_grace_s
        term = 0.0 if force else s.runner_term_grace_s
        await asyncio.gather(
            *(slot.runner.aclose(grace_s=grace, term_grace_s=term) for slot in slots),
            return_exceptions=True,
        )
        self._slots.clear()
        if self._pool is not None:
            await self._pool.aclose()
        for slot in slots:
            for task in slot.tasks:
                task.cancel()
