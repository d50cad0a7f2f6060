"""The default ``RunnerFactory``: keeps one launched runner waiting for its ``Load``.

Starting Python and importing llama-cpp-python costs more than loading a small model, so a cold
request takes the spare (already past its ``Hello``) and only pays for the load itself; a new
spare is launched in the background shortly after.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from power.supervisor.policy import default_cpu_mode
from power.supervisor.process import RunnerProcess
from proto import LoadParams

if TYPE_CHECKING:
    from power.settings import Settings

__all__ = ["REFILL_DELAY_S", "SparePool"]

log = logging.getLogger(__name__)

REFILL_DELAY_S = 2.0


class SparePool:
    def __init__(self, settings: Settings, *, keep_spare: bool = True) -> None:
        self._settings = settings
        self._keep_spare = keep_spare
        self._spare: asyncio.Task[RunnerProcess] | None = None
        self._closed = False
        self._described = False

    def start(self) -> None:
        """Launch the first spare (call from the running loop)."""
        self._refill()

    async def __call__(self, params: LoadParams, *, model: str) -> RunnerProcess:
        runner = await self._take()
        try:
            await runner.load(params, model=model, load_timeout_s=self._settings.load_timeout_s)
        finally:
            # Launch the next spare a little later: starting Python and importing llama.cpp
            # would otherwise compete for the CPU with this model's first request.
            asyncio.get_running_loop().call_later(REFILL_DELAY_S, self._refill)
        return runner

    def _launch(self) -> asyncio.Task[RunnerProcess]:
        # owned by the pool as its spare: taken (awaited) by the next load, or by aclose()
        return asyncio.ensure_future(self._start())

    async def _start(self) -> RunnerProcess:
        s = self._settings
        runner = await RunnerProcess.launch(engine=s.runner_engine, verbose=s.debug > 0)
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
            self._spare = self._launch()

    async def _take(self) -> RunnerProcess:
        task, self._spare = self._spare, None
        if task is not None:
            try:
                runner = await task
            except Exception as exc:
                log.warning("the spare runner failed to start: %s", exc)
            else:
                if runner.proc.returncode is None:
                    return runner
                await runner.aclose(grace_s=0, term_grace_s=0)
        return await self._launch()

    async def aclose(self) -> None:
        self._closed = True
        task, self._spare = self._spare, None
        if task is None:
            return
        if not task.done():
            task.cancel()
        await asyncio.wait({task})  # (our own cancellation still propagates)
        if not task.cancelled() and task.exception() is None:
            await task.result().aclose(grace_s=1.0, term_grace_s=1.0)
