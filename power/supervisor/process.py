"""One runner child process: spawn, handshake, stderr tail, stop ladder.

The runner gets one end of a ``socketpair`` as an inherited fd (no socket paths, EOF both ways
when either side dies), its own process group (a terminal's Ctrl+C reaches only the gateway),
no stdin, and a piped stderr that is re-logged line by line under ``power.runner`` while the
last lines (and a fatal signal's dump of its threads' Python stacks) are kept for crash messages
(``power.supervisor.stderr``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

import psutil

from power.errors import ProtocolError, RunnerCrashedError, RunnerLoadError, RunnerTimeoutError
from power.supervisor.client import RunnerClient
from power.supervisor.stderr import RunnerStderr
from proto import (
    EXIT_LOAD_FAILED,
    PROTOCOL_VERSION,
    ConnectionClosed,
    Failed,
    FrameError,
    FrameReader,
    FrameWriter,
    Hello,
    Load,
    LoadParams,
    Progress,
    Ready,
    Shutdown,
    gateway_decoder,
)

__all__ = ["RunnerProcess", "describe_exit"]

log = logging.getLogger(__name__)


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        sig = signal.Signals(-returncode)
        text = f"killed by {sig.name}"
        if sig == signal.SIGKILL:
            text += " (possibly out of memory)"
        return text
    return f"exit status {returncode}"


class RunnerProcess:
    """A started runner. Use ``await RunnerProcess.start(...)``; it returns once ``Ready``."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        client: RunnerClient,
        *,
        model: str,
    ) -> None:
        self.proc = proc
        self.client = client
        self.model = model
        self.pid = proc.pid
        self.hello: Hello | None = None
        self.ready: Ready | None = None
        self.load_s = 0.0  # from Load to Ready, as the gateway saw it
        self._stderr = RunnerStderr()
        self.stderr_tail = self._stderr.tail  # (both filled in place as stderr is read)
        self.trace = self._stderr.trace  # the Python stacks a fatal signal dumped
        self._stderr_task: asyncio.Task[None] | None = None
        self._client_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[int] | None = None

    # ------------------------------------------------------------------ start

    @classmethod
    async def start(
        cls,
        params: LoadParams,
        *,
        model: str,
        engine: str = "llama",
        load_timeout_s: float = 300.0,
        verbose: bool = False,
        env: dict[str, str] | None = None,
    ) -> RunnerProcess:
        """Launch a runner and load ``params`` into it; returns once it is ``Ready``."""
        self = await cls.launch(engine=engine, verbose=verbose, env=env, timeout_s=load_timeout_s)
        await self.load(params, model=model, load_timeout_s=load_timeout_s)
        return self

    @classmethod
    async def launch(
        cls,
        *,
        engine: str = "llama",
        verbose: bool = False,
        env: dict[str, str] | None = None,
        timeout_s: float = 60.0,
        quiet_start: bool = False,
    ) -> RunnerProcess:
        """Start a runner process and wait for its ``Hello`` (its engine is imported by then).
        ``quiet_start``: it imports in the CPU's idle time first (``runner.quiet``)."""
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [sys.executable, "-m", "runner", "--fd", str(child_sock.fileno())]
        argv += ["--engine", engine]
        if verbose:
            argv.append("--verbose")
        if quiet_start:
            argv.append("--quiet-start")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(child_sock.fileno(),),
                process_group=0,
                env=env,
            )
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent_sock)
        client = RunnerClient(FrameReader(reader, gateway_decoder()), FrameWriter(writer))
        self = cls(proc, client, model="")
        # both owned by this RunnerProcess: cancelled and awaited in _finish()
        assert proc.stderr is not None
        self._stderr_task = asyncio.create_task(
            self._stderr.pump(proc.stderr, self._who), name=f"stderr-{proc.pid}"
        )
        try:
            await self._hello(timeout_s)
        except BaseException:
            self.kill_nowait()
            await self._reap_quietly()
            raise
        return self

    async def load(self, params: LoadParams, *, model: str, load_timeout_s: float) -> None:
        """Send ``Load`` and wait for ``Ready`` (the stall deadline resets on progress)."""
        self.model = self.client.model = model
        self.client.pid = self.pid
        log.info("runner loading: model=%s pid=%d", model, self.pid)
        try:
            await self._load(params, load_timeout_s)
        except BaseException:
            self.kill_nowait()
            await self._reap_quietly()
            raise
        self._client_task = asyncio.create_task(self.client.run(), name=f"client-{self.pid}")

    async def _hello(self, timeout_s: float) -> None:
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            hello = await self._next(self.client.frames, exited, timeout_s, "for a runner to start")
        finally:
            exited.cancel()
        if isinstance(hello, Failed):  # the runner cannot start its engine: never retried
            raise RunnerLoadError(
                f"the model runner cannot start: {hello.message}",
                pid=self.pid,
                stderr_tail=list(self.stderr_tail),
            )
        if not isinstance(hello, Hello) or hello.protocol != PROTOCOL_VERSION:
            raise ProtocolError(
                f"runner speaks protocol {getattr(hello, 'protocol', '?')},"
                f" expected {PROTOCOL_VERSION}",
                pid=self.pid,
                stderr_tail=list(self.stderr_tail),
            )
        self.hello = hello

    async def _load(self, params: LoadParams, load_timeout_s: float) -> None:
        """``Ready`` or an error. ``load_timeout_s`` is a stall deadline: it runs from the
        ``Load`` or the last ``Progress``, so a large model that loads steadily is waited for."""
        frames = self.client.frames
        exited = asyncio.ensure_future(self.proc.wait())
        started = time.monotonic()
        fraction = 0.0
        try:
            self.client.writer.write(Load(params=params))
            while True:
                waiting = f"for model {self.model} to load (at {fraction:.0%})"
                msg = await self._next(frames, exited, load_timeout_s, waiting)
                if isinstance(msg, Progress):
                    fraction = msg.fraction
                    log.debug(
                        "runner load progress: model=%s pid=%d %.0f%%",
                        self.model,
                        self.pid,
                        100 * fraction,
                    )
                    continue
                if isinstance(msg, Ready):
                    self.ready = msg
                    self.load_s = time.monotonic() - started
                    log.info(
                        "runner ready: model=%s pid=%d load=%.2fs rss=%d vram=%d gpu_layers=%d",
                        self.model,
                        self.pid,
                        self.load_s,
                        msg.memory.rss,
                        msg.memory.vram,
                        msg.gpu_layers,
                    )
                    return
                if isinstance(msg, Failed):
                    await self._reap_quietly()
                    raise RunnerLoadError(
                        f"failed to load model {self.model}: {msg.message}",
                        model=self.model,
                        pid=self.pid,
                        stderr_tail=list(self.stderr_tail),
                    )
                raise ProtocolError(f"unexpected {type(msg).__name__} during load", pid=self.pid)
        finally:
            exited.cancel()

    async def _next(
        self,
        frames: FrameReader[Any],
        exited: asyncio.Future[int],
        timeout_s: float,
        waiting: str,
    ) -> object:
        """The next frame within ``timeout_s``; else ``RunnerTimeoutError`` ("timed out
        waiting ``waiting``"), or the runner's exit as an error."""
        read = asyncio.ensure_future(frames.read())
        try:
            done, _ = await asyncio.wait(
                {read, exited}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            read.cancel()
            raise
        if read in done:
            try:
                return read.result()
            except (ConnectionClosed, FrameError):
                pass  # the process is dying: report its exit below
        else:
            read.cancel()
        if not done:
            raise RunnerTimeoutError(
                f"timed out waiting {waiting}: nothing from its runner for {timeout_s:g}s",
                model=self.model,
                pid=self.pid,
                stderr_tail=list(self.stderr_tail),
            )
        rc = await self.proc.wait()
        await self._drain_stderr()
        self._log_tail()
        cls = RunnerLoadError if rc == EXIT_LOAD_FAILED else RunnerCrashedError
        raise cls(
            f"runner for {self.model} exited during load ({describe_exit(rc)})",
            model=self.model,
            pid=self.pid,
            stderr_tail=list(self.stderr_tail),
        )

    # ------------------------------------------------------------------ stderr

    def _who(self) -> str:
        return f"[{self.model} pid={self.pid}]"

    async def _drain_stderr(self, timeout_s: float = 2.0) -> None:
        if self._stderr_task is not None:  # (our own cancellation still propagates)
            await asyncio.wait({self._stderr_task}, timeout=timeout_s)

    def _log_tail(self) -> None:
        self._stderr.log_tail(self._who())

    def crash_error(self, returncode: int | None) -> RunnerCrashedError:
        self._log_tail()
        return RunnerCrashedError(
            f"model runner for {self.model} (pid {self.pid}) stopped unexpectedly"
            f" ({describe_exit(returncode)})",
            model=self.model,
            pid=self.pid,
            stderr_tail=list(self.stderr_tail),
            trace=self.trace,
        )

    # ------------------------------------------------------------------ exit

    async def wait_exited(self) -> int:
        """Wait for the process to end, however it ends; then finish reading its stderr."""
        closed = asyncio.ensure_future(self.client.wait_closed())
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            await asyncio.wait({closed, exited}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():  # socket gone but process alive: give it a moment, then kill
                try:
                    await asyncio.wait_for(asyncio.shield(exited), 2.0)
                except TimeoutError:
                    self.kill_nowait()
            rc = await self.proc.wait()
        finally:
            closed.cancel()
            exited.cancel()
        await self._drain_stderr()
        return rc

    def kill_nowait(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    async def aclose(self, *, grace_s: float = 5.0, term_grace_s: float = 5.0) -> int:
        """The stop ladder: Shutdown, wait, SIGTERM, wait, SIGKILL; always reap. Idempotent."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._stop_ladder(grace_s, term_grace_s))
        try:
            return await asyncio.shield(self._close_task)
        except asyncio.CancelledError:
            self.kill_nowait()  # a cancelled cleanup still leaves no orphan
            raise

    async def _stop_ladder(self, grace_s: float, term_grace_s: float) -> int:
        proc = self.proc
        if proc.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.client.writer.write(Shutdown())
            for sig, wait_s in ((None, grace_s), (signal.SIGTERM, term_grace_s)):
                if sig is not None and proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, sig)
                try:
                    await asyncio.wait_for(proc.wait(), wait_s)
                    break
                except TimeoutError:
                    continue
            self.kill_nowait()
        rc = await proc.wait()
        await self._finish()
        return rc

    async def _finish(self) -> None:
        self.client.close()
        await self._drain_stderr()
        for task in (self._client_task, self._stderr_task):  # owned here: cancelled and awaited
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task})
        await self.client.wait_writer_closed()

    async def _reap_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 5.0)
        self.kill_nowait()
        await self.proc.wait()
        await self._finish()

    def stats_rss(self) -> int:
        """Current resident memory of the runner, measured now."""
        try:
            return int(psutil.Process(self.pid).memory_info().rss)
        except psutil.Error:
            return 0

    @property
    def stderr_lines(self) -> Sequence[str]:
        return list(self.stderr_tail)
