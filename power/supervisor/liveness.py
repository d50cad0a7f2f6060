"""A runner's liveness: its exit turned into state, a hung runner killed, a crashed CPU kernel.

Each loaded runner has a watcher (its exit fails whoever was using it, with its stderr tail) and
a pinger (alive but no longer answering: killed). A runner that dies of a CPU fault before its
first decode finished makes its model load in CPU mode ``plain`` from then on.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import TYPE_CHECKING, Protocol

from power.errors import RunnerError, RunnerTimeoutError
from power.supervisor.process import describe_exit
from power.supervisor.record import LoadedRunner
from power.supervisor.service import RunnerExit
from proto import CpuMode

if TYPE_CHECKING:
    from power.settings import Settings

__all__ = ["Owner", "ping", "watch"]

log = logging.getLogger(__name__)

# Signals a fault in native code dies of (a bad kernel, an unsupported instruction, a bad page)
_KERNEL_FAULTS = frozenset({signal.SIGSEGV, signal.SIGILL, signal.SIGBUS})


class Owner(Protocol):
    """The supervisor, as a runner's watcher sees it."""

    plain: set[str]  # runner keys that load in CPU mode plain

    def forget(self, loaded: LoadedRunner) -> None: ...

    def notify(self) -> None: ...

    def exited(self, event: RunnerExit) -> None: ...


async def watch(owner: Owner, loaded: LoadedRunner) -> None:
    """Wait for the runner to exit, however it exits; fail its requests; reap it."""
    runner = loaded.runner
    rc = await runner.wait_exited()
    loaded.dead = True
    if loaded.timer is not None:
        loaded.timer.cancel()
    owner.forget(loaded)
    name = loaded.model.name
    owner.exited(
        RunnerExit(
            model=name,
            pid=runner.pid,
            reason=loaded.reason if loaded.stopping else "crash",
            how=describe_exit(rc),
            at=time.time(),
            stderr_tail=tuple(runner.stderr_lines[-10:]),
        )
    )
    if loaded.stopping:
        log.info(
            "runner unloaded: model=%s pid=%d reason=%s (%s)",
            name,
            runner.pid,
            loaded.reason,
            describe_exit(rc),
        )
        error = RunnerError(f"model {name} was unloaded ({loaded.reason})", model=name)
    else:
        error = runner.crash_error(rc)
        log.error("%s", error)
        _fall_back(owner, loaded, rc)  # before the requests fail: their retry loads plain
    runner.client.fail_all(error)
    for task in loaded.tasks:
        if task is not asyncio.current_task():
            task.cancel()
    await runner.aclose(grace_s=0, term_grace_s=0)
    owner.notify()


def _fall_back(owner: Owner, loaded: LoadedRunner, returncode: int) -> None:
    """A runner killed by a CPU fault before its first decode finished: llama.cpp's CPU
    kernels are suspected, so this model loads with plain buffers from now on."""
    runner = loaded.runner
    if -returncode not in _KERNEL_FAULTS or runner.client.decoded:
        return
    ready = runner.ready
    if ready is None or ready.cpu_mode == CpuMode.PLAIN or loaded.key in owner.plain:
        return
    owner.plain.add(loaded.key)
    log.warning(
        "model runner for %s (pid %d) died of %s in its first decode in CPU mode %s;"
        " llama.cpp's CPU kernels are suspected, so %s now loads in CPU mode plain"
        " (no extra buffer types) for the rest of this daemon's life. Its last lines: %s",
        loaded.model.name,
        runner.pid,
        signal.Signals(-returncode).name,
        ready.cpu_mode,
        loaded.model.name,
        " | ".join(runner.stderr_lines[-5:]) or "(none)",
    )


async def ping(settings: Settings, loaded: LoadedRunner) -> None:
    """Ping the runner while it lives; one that stops answering is killed (the watcher then
    reports its exit)."""
    runner = loaded.runner
    while not loaded.dead:
        await asyncio.sleep(settings.ping_interval_s)
        try:
            await runner.client.ping(settings.ping_timeout_s)
        except TimeoutError:
            error = RunnerTimeoutError(
                f"model runner for {loaded.model.name} (pid {runner.pid}) stopped"
                f" responding for {settings.ping_timeout_s:.0f}s and was killed",
                model=loaded.model.name,
                pid=runner.pid,
                stderr_tail=runner.stderr_lines,
            )
            log.error("%s", error)
            runner.client.fail_all(error)
            loaded.stopping, loaded.reason = True, "hung"
            runner.kill_nowait()
            return
        except Exception:
            if loaded.dead or runner.client.closed:
                return  # the watcher reports the exit
            # (it lives on: a ping that failed otherwise must not end its pinging unseen)
            log.exception(
                "pinging the runner for %s (pid %s) failed", loaded.model.name, runner.pid
            )
