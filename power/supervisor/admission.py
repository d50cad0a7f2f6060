"""Admission: the one bounded queue in front of every runner.

A request waits here for a lease on a runner (loading it if needed) and then for a seat, one of
the runner's parallel sequences, within ``max_queue`` waiting requests and its own deadline
(``queue_timeout_s``). When the daemon stops, ``draining`` refuses new requests, and the cut
ends those still waiting (``ShuttingDownError``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from power.aio import Interrupted, until
from power.errors import ServerBusyError, ShuttingDownError
from power.supervisor.record import LoadedRunner
from proto import LoadParams

if TYPE_CHECKING:
    from power.settings import Settings
    from power.store.model import LocalModel

__all__ = ["Admission", "Leases"]


class Leases(Protocol):
    """Where admission gets its runners from (the supervisor)."""

    async def acquire(
        self, model: LocalModel, params: LoadParams, keep_alive_s: float | None
    ) -> LoadedRunner: ...

    def release(self, loaded: LoadedRunner) -> None: ...


class Admission:
    def __init__(
        self,
        settings: Settings,
        leases: Leases,
        clock: Callable[[], float],
        on_admitted: Callable[[float], None],
    ) -> None:
        self._settings = settings
        self._leases = leases
        self._clock = clock
        self._on_admitted = on_admitted  # with the seconds a seated request waited
        self.waiting = 0  # requests waiting here: for a load or for a seat
        self.draining = False  # stopping: new requests are refused
        self.cut = asyncio.Event()  # the grace period is over: waiting requests end

    async def enter(
        self,
        model: LocalModel,
        params: LoadParams,
        keep_alive_s: float | None,
        *,
        seat: bool = True,
        deadline_s: float | None = None,
    ) -> LoadedRunner:
        """A lease (and, with ``seat``, a sequence) on a runner for ``model``; undo it with
        ``leave``. ``ServerBusyError`` when the queue is full or the deadline passes,
        ``ShuttingDownError`` when the daemon stops first."""
        if self.draining:
            raise ShuttingDownError()
        if self.waiting >= self._settings.max_queue:
            raise ServerBusyError()
        self.waiting += 1
        try:
            wait = self._wait(model, params, keep_alive_s, seat, deadline_s)
            loaded = await until(wait, self.cut)
        except Interrupted:
            raise ShuttingDownError() from None
        finally:
            self.waiting -= 1
        if self.cut.is_set():  # seated by the cut itself (a seat it freed): too late to start
            self.leave(loaded, seat=seat)
            raise ShuttingDownError()
        return loaded

    def leave(self, loaded: LoadedRunner, *, seat: bool = True) -> None:
        """Synchronous, so it can run from any cleanup path."""
        if seat:
            loaded.seats.release()
        self._leases.release(loaded)

    async def _wait(
        self,
        model: LocalModel,
        params: LoadParams,
        keep_alive_s: float | None,
        seat: bool,
        deadline_s: float | None,
    ) -> LoadedRunner:
        deadline = self._settings.queue_timeout_s if deadline_s is None else deadline_s
        loaded: LoadedRunner | None = None
        done = False
        waited_from = self._clock()
        try:
            async with asyncio.timeout(None if math.isinf(deadline) else deadline):
                loaded = await self._leases.acquire(model, params, keep_alive_s)
                if seat:
                    loaded.queued += 1
                    try:
                        await loaded.seats.acquire()
                    finally:
                        loaded.queued -= 1
            done = True
            if seat:
                waited = self._clock() - waited_from
                loaded.waits += 1
                loaded.wait_total_s += waited
                self._on_admitted(waited)
            return loaded
        except TimeoutError:
            raise ServerBusyError(
                f"server busy: request waited {deadline:g}s for model {model.name}"
            ) from None
        finally:
            if loaded is not None and not done:
                self._leases.release(loaded)
