"""The supervisor: which runners exist, who is using them, and when they go away.

Mechanism lives here, policy in ``policy.py``, admission (the queue and the seats) in
``admission.py``, placement (making room, GPUs) in ``placement.py``, a runner's liveness
(exit, hang, a crashed CPU kernel) in ``liveness.py``. One lock serialises loads (so concurrent
cold requests for one model load it once); requests to a loaded model never touch it. A lease
bumps a runner's refcount; at zero the keep_alive timer is armed. ``Supervisor`` is what
``power.api`` sees as ``Runners`` (``service.py``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from power.errors import ProtocolError, RunnerCrashedError, ShuttingDownError
from power.supervisor import liveness, policy
from power.supervisor.admission import Admission
from power.supervisor.memory import MemoryProbe, probe_machine
from power.supervisor.placement import Placer
from power.supervisor.record import LoadedRunner, RunnerFactory, runner_key
from power.supervisor.service import (
    NO_EVENTS,
    Events,
    RequestTiming,
    RunnerExit,
    RunnersStatus,
    RunnerStats,
)
from power.supervisor.spare import SparePool
from power.supervisor.stats import runner_stats
from proto import CpuMode, FromRunner, LoadParams, Msg

if TYPE_CHECKING:
    from power.settings import Settings
    from power.store.model import LocalModel

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)

RECENT_EXITS = 10  # runner exits /api/ps shows


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        spawn: RunnerFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        memory_probe: MemoryProbe = probe_machine,
        events: Events | None = None,
    ) -> None:
        self.settings = settings
        self._events: Events = events or NO_EVENTS
        self._exits: collections.deque[RunnerExit] = collections.deque(maxlen=RECENT_EXITS)
        # what runners are asked to load in, unless a model fell back (liveness)
        self.cpu_mode = policy.requested_cpu_mode(settings.cpu_extra_buffers)
        self.plain: set[str] = set()  # runner keys whose CPU kernels crashed: plain buffers
        self._pool = (
            None if spawn is not None else SparePool(settings, keep_spare=settings.runner_spare)
        )
        self._spawn: RunnerFactory = spawn or self._pool  # type: ignore[assignment]
        self._clock = clock
        self._runners: dict[str, LoadedRunner] = {}
        self._exiting: set[LoadedRunner] = set()  # stopped, their processes not yet reaped
        self._load_lock = asyncio.Lock()
        self._changed = asyncio.Event()  # replaced by a fresh one at every change
        self._tg: asyncio.TaskGroup | None = None
        self._admission = Admission(settings, self, clock, self._events.request_admitted)
        self._placer = Placer(settings, memory_probe, self)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        settings: Settings,
        *,
        spawn: RunnerFactory | None = None,
        force: asyncio.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        memory_probe: MemoryProbe = probe_machine,
        events: Events | None = None,
    ) -> AsyncIterator[Supervisor]:
        """The supervisor, owning its tasks (expiries, watchers, pingers) in one TaskGroup."""
        self = cls(settings, spawn=spawn, clock=clock, memory_probe=memory_probe, events=events)
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            if self._pool is not None:
                self._pool.start()
            try:
                yield self
            finally:
                await self.aclose(force=force is not None and force.is_set())

    # ------------------------------------------------------------------ Runners (service.py)

    async def request(
        self,
        model: LocalModel,
        params: LoadParams,
        keep_alive_s: float | None,
        build: Callable[[int], Msg],
        timing: RequestTiming | None = None,
        deadline_s: float | None = None,
        *,
        seat: bool = True,
    ) -> AsyncIterator[list[FromRunner]]:
        """Run one request, yielding batches of its replies until the terminal one.

        A runner that dies while the request runs fails it: the request may be what killed it,
        and sent again it would kill a second runner. Only a death that put the model in CPU
        mode plain (``liveness``) is tried once more, there, if nothing was produced yet. (A
        runner that dies while loading is started once more by ``_load``.) Closing the
        iterator early cancels the request on the runner.
        """
        for attempt in (0, 1):
            started = self._clock()
            loaded = await self._admission.enter(
                model, params, keep_alive_s, seat=seat, deadline_s=deadline_s
            )
            if timing is not None:
                timing.load_s += self._clock() - started
                timing.pid = loaded.runner.pid
            was_plain = loaded.key in self.plain
            stream = None
            produced = False
            leave = _once(functools.partial(self._admission.leave, loaded, seat=seat))
            try:
                stream = loaded.runner.client.open(build)
                # the seat is free once the runner is done, even while a slow client still reads
                stream.on_end = leave
                while not stream.finished:
                    try:
                        batch = await stream.next_batch()
                    except StopAsyncIteration:
                        return
                    produced = True
                    yield batch
                return
            except RunnerCrashedError as exc:
                fell_back = not was_plain and loaded.key in self.plain  # (set by its watcher)
                if produced or attempt == 1 or not fell_back:
                    raise
                log.warning("retrying in CPU mode plain for %s: %s", model.name, exc)
            finally:
                if stream is not None:
                    stream.close()
                leave()

    async def call(
        self,
        model: LocalModel,
        params: LoadParams,
        keep_alive_s: float | None,
        build: Callable[[int], Msg],
    ) -> FromRunner:
        replies = [
            msg
            async for batch in self.request(model, params, keep_alive_s, build, seat=False)
            for msg in batch
        ]
        if len(replies) != 1:
            raise ProtocolError(f"expected one reply, got {replies!r}", model=model.name)
        return replies[0]

    async def load(
        self, model: LocalModel, params: LoadParams, keep_alive_s: float | None
    ) -> RunnerStats:
        loaded = await self._admission.enter(model, params, keep_alive_s, seat=False)
        try:
            return self._stats_of(loaded, loaded.runner.stats_rss())
        finally:
            self._admission.leave(loaded, seat=False)

    async def unload(self, model: LocalModel, params: LoadParams) -> bool:
        """``power stop``: unload now if idle, else as soon as the last request ends."""
        loaded = self._runners.get(runner_key(params))
        if loaded is None:
            return False
        loaded.keep_alive_s = 0.0
        if loaded.refcount == 0:
            await self._retire(loaded, "request")
        return True

    async def stats(self) -> list[RunnerStats]:
        runners = self.loaded()
        await self._placer.refresh_vram(runners)
        rss = await asyncio.to_thread(lambda: [x.runner.stats_rss() for x in runners])
        return [self._stats_of(x, r) for x, r in zip(runners, rss, strict=True)]

    def _stats_of(self, loaded: LoadedRunner, rss: int) -> RunnerStats:
        return runner_stats(
            loaded,
            rss,
            setting=self.settings.cpu_extra_buffers,
            requested=self.cpu_mode,
            since_expiry=self._clock(),
        )

    # ------------------------------------------------------------------ leases (admission)

    async def acquire(
        self, model: LocalModel, params: LoadParams, keep_alive_s: float | None
    ) -> LoadedRunner:
        """A runner for ``model`` that serves ``params``, loading it if needed; refcount + 1."""
        key = runner_key(params)
        mode = CpuMode.PLAIN if key in self.plain else self.cpu_mode
        params = msgspec.structs.replace(params, cpu_mode=mode)
        loaded = self._runners.get(key)
        if loaded is None or not loaded.serves(params):
            async with self._load_lock:
                loaded = self._runners.get(key)
                if loaded is None or not loaded.serves(params):
                    loaded = await self._load(key, model, params, keep_alive_s, loaded)
        self._attach(loaded, model, params, keep_alive_s)
        return loaded

    def release(self, loaded: LoadedRunner) -> None:
        """Synchronous, so it can run from any cleanup path."""
        loaded.refcount -= 1
        loaded.last_used = self._clock()
        if loaded.refcount == 0 and loaded.usable:
            deadline = policy.expiry_deadline(loaded.last_used, loaded.keep_alive_s)
            loaded.expires_at = deadline
            if deadline is not None and loaded.keep_alive_s <= 0:
                self._spawn_task(self._retire(loaded, "expired"))
            elif deadline is not None:
                loop = asyncio.get_running_loop()
                loaded.timer = loop.call_later(loaded.keep_alive_s, self._expire, loaded)
        self.notify()

    def _attach(
        self,
        loaded: LoadedRunner,
        model: LocalModel,
        params: LoadParams,
        keep_alive_s: float | None,
    ) -> None:
        loaded.served[model.name] = (model, params.n_ctx)  # (models may share one runner)
        loaded.refcount += 1
        loaded.expires_at = None
        if loaded.timer is not None:
            loaded.timer.cancel()
            loaded.timer = None
        if keep_alive_s is not None:
            loaded.keep_alive_s = keep_alive_s

    # ------------------------------------------------------------------ loading and unloading

    async def _load(
        self,
        key: str,
        model: LocalModel,
        params: LoadParams,
        keep_alive_s: float | None,
        old: LoadedRunner | None,
    ) -> LoadedRunner:
        """Replace ``old`` (waiting for it to be idle), make room, load; the new runner."""
        if old is not None:
            await self._retire(old, "request", wait_idle=True)  # (reloaded with new options)
        placed = await self._placer.place(model, params)
        try:
            runner = await self._spawn(placed.params, model=model.name)
        except RunnerCrashedError as exc:  # (a load that failed cleanly is not retried)
            log.warning("runner died while loading %s; once more: %s", model.name, exc)
            runner = await self._spawn(placed.params, model=model.name)
        self._events.runner_loaded(model.name, runner.load_s)
        now = self._clock()
        loaded = LoadedRunner(
            key=key,
            model=model,
            params=placed.params,
            runner=runner,
            keep_alive_s=self.settings.keep_alive_s if keep_alive_s is None else keep_alive_s,
            loaded_at=now,
            last_used=now,
            need_ram=placed.need_ram,
            asked=params,
        )
        ready = runner.ready
        loaded.seats = asyncio.Semaphore(ready.num_parallel if ready is not None else 1)
        self._runners[key] = loaded
        loaded.tasks.append(self._spawn_task(liveness.watch(self, loaded)))
        loaded.tasks.append(self._spawn_task(liveness.ping(self.settings, loaded)))
        loaded.vram = await self._placer.measure_vram(loaded, placed.where.on_gpu)
        loaded.all_on_gpu = placed.where.whole and placed.where.n_gpu_layers > 0
        return loaded

    async def _retire(self, loaded: LoadedRunner, reason: str, *, wait_idle: bool = False) -> None:
        if wait_idle:
            await self.wait_for(lambda: loaded.refcount == 0 or loaded.dead)
        if loaded.refcount > 0 and not wait_idle:
            return  # someone attached since this was scheduled: it is not idle any more
        self._stop(loaded, reason)
        await self._reap(loaded)

    def _stop(self, loaded: LoadedRunner, reason: str) -> None:
        """Take ``loaded`` out of service now; it is ``exiting()`` until ``_reap`` is done."""
        if not loaded.stopping:
            loaded.stopping = True
            loaded.reason = reason
            if loaded.timer is not None:
                loaded.timer.cancel()
        self.forget(loaded)
        self._exiting.add(loaded)

    async def _reap(self, loaded: LoadedRunner) -> None:
        s = self.settings
        try:
            await loaded.runner.aclose(
                grace_s=s.runner_stop_grace_s, term_grace_s=s.runner_term_grace_s
            )
        finally:
            self._exiting.discard(loaded)
            self.notify()  # (placement may be waiting for the memory it held)

    def _expire(self, loaded: LoadedRunner) -> None:
        loaded.timer = None
        if loaded.refcount == 0 and loaded.usable:
            self._spawn_task(self._retire(loaded, "expired"))

    # ------------------------------------------------------------------ the pool (placement)

    def live(self) -> list[LoadedRunner]:
        return self.loaded()

    async def evict(self, loaded: LoadedRunner, reason: str) -> None:
        """Stop ``loaded`` without waiting for its process to exit: tearing down a runner
        (freeing the model, ending the interpreter) takes a tenth of a second or more, which
        a model swap would otherwise wait for before its load begins. The exit is awaited by
        a task of ours; until then the runner is in ``exiting()``, whose memory placement does
        not count as free."""
        if loaded.refcount > 0:
            return  # (placement evicts idle runners only)
        self._stop(loaded, reason)
        self._spawn_task(self._reap(loaded))

    def exiting(self) -> list[LoadedRunner]:
        return list(self._exiting)

    async def wait_for_change(self) -> None:
        await self._changed.wait()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def notify(self) -> None:
        """Something changed (a release, an exit): wake whoever waits for a change."""
        self._changed.set()
        self._changed = asyncio.Event()

    def exited(self, event: RunnerExit) -> None:
        self._exits.append(event)
        self._events.runner_exited(event)

    def status(self) -> RunnersStatus:
        return RunnersStatus(
            draining=self._admission.draining,
            queue_depth=self._admission.waiting,
            loaded_models=len(self.loaded()),
            recent_exits=tuple(self._exits),
        )

    def forget(self, loaded: LoadedRunner) -> None:
        if self._runners.get(loaded.key) is loaded:
            del self._runners[loaded.key]

    # ------------------------------------------------------------------ stopping

    def drain(self) -> int:
        """Refuse new requests from now on; returns how many are in flight or waiting."""
        self._admission.draining = True
        return self._admission.waiting + sum(x.refcount - x.queued for x in self.loaded())

    def idle(self) -> bool:
        """Nothing in flight or waiting."""
        return self._admission.waiting == 0 and all(x.refcount == 0 for x in self.loaded())

    async def wait_idle(self) -> None:
        """Until ``idle()`` (waking on every change, and at least every quarter second)."""
        while not self.idle():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.25)

    def cut(self) -> int:
        """End every request still in flight or waiting with ``ShuttingDownError`` (each is
        cancelled on its runner); returns how many were running."""
        self._admission.draining = True
        self._admission.cut.set()
        error = ShuttingDownError("server is shutting down: the request was cut short")
        return sum(x.runner.client.fail_requests(error) for x in self.loaded())

    # ------------------------------------------------------------------ state

    def loaded(self) -> list[LoadedRunner]:
        return [x for x in self._runners.values() if not x.dead]

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        if self._tg is None:  # a Supervisor used without open(): tests that drive it by hand
            return asyncio.ensure_future(coro)
        return self._tg.create_task(coro)

    async def aclose(self, *, force: bool = False) -> None:
        """Stop every runner in parallel under one deadline; always reap."""
        runners = list(self._runners.values())
        for loaded in runners:
            loaded.stopping, loaded.reason = True, "shutdown"
            if loaded.timer is not None:
                loaded.timer.cancel()
        runners += self._exiting  # evicted, still exiting (a runner's aclose is idempotent)
        s = self.settings
        grace = 0.0 if force else s.runner_stop_grace_s
        term = 0.0 if force else s.runner_term_grace_s
        await asyncio.gather(
            *(x.runner.aclose(grace_s=grace, term_grace_s=term) for x in runners),
            return_exceptions=True,
        )
        self._runners.clear()
        if self._pool is not None:
            await self._pool.aclose()
        for loaded in runners:
            for task in loaded.tasks:
                task.cancel()


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn``, called at most once however often the result is."""
    called = False

    def call() -> None:
        nonlocal called
        if not called:
            called = True
            fn()

    return call
