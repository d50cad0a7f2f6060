"""The default ``RunnerFactory``: keeps one launched runner waiting for its ``Load``.

Starting Python and importing llama-cpp-python costs more than loading a small model, so a cold
request takes the spare (already past its ``Hello``) and only pays for the load itself.

The next spare is launched ``REFILL_DELAY_S`` after a load, so that its start does not compete
with that model's load and first token, and with a quiet start (``runner.quiet``) where the
platform has one: its imports run only in the CPU's idle time, so it does not slow the answer
being decoded either. When loads come back to back (requests alternating between models), the
next load would come before that: the next spare is then launched quietly beside the load, on
the CPU the load leaves idle. A quiet start can take long on a busy machine, so a load that
finds the spare still starting launches a runner of its own as well and takes whichever says
``Hello`` first. A spare left over is the next one; a runner of its own left over still
starting is stopped, since its start would compete with the load. Where there is no quiet start
(off Linux), a load waits for a spare that is starting.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING

from power.supervisor.policy import default_cpu_mode
from power.supervisor.process import RunnerProcess
from proto import LoadParams

if TYPE_CHECKING:
    from power.settings import Settings

__all__ = ["REFILL_DELAY_S", "SparePool"]

log = logging.getLogger(__name__)

REFILL_DELAY_S = 2.0
# one thread of the SCHED_IDLE policy: Linux schedules threads apart (runner.quiet)
QUIET_START = sys.platform.startswith("linux")

Starting = asyncio.Task[RunnerProcess]


class SparePool:
    def __init__(
        self,
        settings: Settings,
        *,
        keep_spare: bool = True,
        refill_delay_s: float = REFILL_DELAY_S,
    ) -> None:
        self._settings = settings
        self._keep_spare = keep_spare
        self._refill_delay_s = refill_delay_s
        self._spare: Starting | None = None
        self._closing: set[asyncio.Task[None]] = set()  # starts not kept: closed once started
        self._closed = False
        self._described = False
        self._last_take: float | None = None  # (the loop's clock)

    def start(self) -> None:
        """Launch the first spare (call from the running loop)."""
        self._refill()

    async def __call__(self, params: LoadParams, *, model: str) -> RunnerProcess:
        loop = asyncio.get_running_loop()
        now, last = loop.time(), self._last_take
        self._last_take = now
        runner = await self._take()
        if QUIET_START and last is not None and now - last < self._refill_delay_s:
            self._refill()  # back to back: the next load may well come before the delay ends
        try:
            await runner.load(params, model=model, load_timeout_s=self._settings.load_timeout_s)
        finally:
            loop.call_later(self._refill_delay_s, self._refill)
        return runner

    def _launch(self, *, quiet: bool) -> Starting:
        # owned by the caller: awaited, kept as the spare, or handed to _keep
        return asyncio.ensure_future(self._start(quiet))

    async def _start(self, quiet: bool) -> RunnerProcess:
        s = self._settings
        runner = await RunnerProcess.launch(
            engine=s.runner_engine, verbose=s.debug > 0, quiet_start=quiet
        )
        hello = runner.hello
        if not self._described and hello is not None:
            self._described = True  # once per daemon: every runner has the same engine
            mode, why = default_cpu_mode(s.cpu_extra_buffers, hello)
            log.info(
                "runner engine: %s on %s; models load in CPU mode %s (%s)",
                hello.engine,
                hello.cpu,
                mode,
                why,
            )
            if hello.system_info:
                log.info("llama.cpp system info: %s", hello.system_info)
        return runner

    def _refill(self) -> None:
        if self._keep_spare and not self._closed and self._spare is None:
            self._spare = self._launch(quiet=QUIET_START)

    async def _take(self) -> RunnerProcess:
        spare, self._spare = self._spare, None
        if spare is not None and (spare.done() or not QUIET_START):
            runner = await self._started(spare)
            if runner is not None:
                return runner
            spare = None
        own = self._launch(quiet=False)
        if spare is None:
            return await own
        # The spare is still in its quiet start, which a busy machine all but stops: the first
        # of the two to say Hello takes this load. The spare left over is the next one; a plain
        # start left over is too once it is done, and is stopped if not, since it would go on
        # competing with this load for the CPU.
        try:
            done, _ = await asyncio.wait({spare, own}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            self._keep(spare)
            self._keep_if_done(own)
            raise
        if spare in done:
            runner = await self._started(spare)
            if runner is not None:
                self._keep_if_done(own)
                return runner
            return await own
        self._keep(spare)
        return await own

    async def _started(self, task: Starting) -> RunnerProcess | None:
        """The runner a spare's start gave, if it is alive; None (logged) if not."""
        try:
            runner = await task
        except Exception as exc:
            log.warning("the spare runner failed to start: %s", exc)
            return None
        if runner.proc.returncode is None:
            return runner
        await runner.aclose(grace_s=0, term_grace_s=0)
        return None

    def _keep(self, task: Starting) -> None:
        """A start no load took: the next spare, or closed if there is one."""
        if self._spare is None and self._keep_spare and not self._closed:
            self._spare = task
        else:
            self._close(task)

    def _keep_if_done(self, task: Starting) -> None:
        if task.done():
            self._keep(task)
        else:
            self._close(task)

    def _close(self, task: Starting) -> None:
        """Stop a start (or the runner it gave) in the background; ``aclose`` waits for it."""
        closing = asyncio.ensure_future(self._discard(task))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    @staticmethod
    async def _discard(task: Starting) -> None:
        if not task.done():
            task.cancel()
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is None:
            await task.result().aclose(grace_s=1.0, term_grace_s=1.0)

    async def aclose(self) -> None:
        self._closed = True
        task, self._spare = self._spare, None
        if task is not None:
            self._close(task)
        if self._closing:
            await asyncio.wait(set(self._closing))
