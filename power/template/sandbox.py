"""``TemplateSandbox``: Jinja chat templates rendered in worker processes the gateway owns.

A GGUF chat template is code a client can upload, and minijinja bounds its instructions but
not its memory: one `([s] * 100000)|string` asks for gigabytes at once, and a failed
allocation aborts the process. So the gateway never renders one itself. It hands each
rendering to a worker (``python -m power.template._render_worker``), which renders under an
address-space cap; a worker that runs out of memory, dies or overruns ``timeout_s`` fails
that one request with a ``TemplateError`` (a 400 naming the cause), is reaped and replaced.

Workers start on demand up to ``size`` (one is started by ``warm`` when the app starts, so the
first request does not wait for an interpreter), serve one rendering at a time, and are
reused; one idle for ``idle_s`` is closed unless it is the last, and one whose resident memory
is past ``retire_rss`` after a rendering is closed at once. ``close`` stops them all.

A template whose rendering exhausted its worker (out of memory, dead, past the deadline) is
not rendered again for ``quarantine_s``: its requests fail at once with the reason, so a
client repeating such a request cannot keep the workers busy for everyone else.

Image data never travels to a worker: templates see each image as an empty string (they
only count images or mark where they go; the runner receives the data itself).
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import msgspec

from power.logging import redact
from power.template._error import TemplateError
from power.template._render_wire import (
    BIG_INT,
    Refused,
    Render,
    Reply,
    WireClosed,
    WireTimeout,
    read_frame,
    write_frame,
)
from proto import MAX_FRAME

__all__ = [
    "IDLE_S",
    "POOL_SIZE",
    "QUARANTINE_S",
    "RENDER_TIMEOUT_S",
    "RETIRE_RSS",
    "TemplateSandbox",
]

log = logging.getLogger(__name__)

POOL_SIZE = 4  # workers at most; idle ones beyond the first close after IDLE_S
RENDER_TIMEOUT_S = 10.0  # minijinja's fuel stops a template far sooner; this stops the rest
IDLE_S = 60.0
RETIRE_RSS = 256 * 2**20  # a worker this large after a rendering is replaced by a new one
QUARANTINE_S = 30.0
_QUARANTINED = 256  # templates remembered at most (the oldest is forgotten first)
_STOP_S = 2.0
_MAX_REPLY = 4 * MAX_FRAME + 1024  # MAX_OUTPUT characters, 4 bytes each at most, and framing
_TAIL = 4096
_STOPPING = "the server is stopping: templates are not rendered"
_OOM_MARK = b"memory allocation of"  # what Rust's allocator prints before it aborts
_MODULE = "power.template._render_worker"


class _Worker:
    """One worker process: pipes to it, a file for its stderr, and when it went idle."""

    def __init__(self, retire_rss: int) -> None:
        try:
            self.stderr: IO[bytes] = tempfile.TemporaryFile()
        except OSError as exc:  # no writable temporary folder: render without the stderr tail
            log.warning("template worker stderr goes nowhere: %s", exc)
            self.stderr = open(os.devnull, "w+b")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", _MODULE, str(retire_rss)],
                # an abort for memory prints its one line without a backtrace (slow to collect)
                env={**os.environ, "RUST_BACKTRACE": "0"},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                bufsize=0,
                process_group=0,  # a terminal's Ctrl+C is the gateway's to handle
            )
        except BaseException:
            self.stderr.close()
            raise
        self.idle_since = time.monotonic()
        log.debug("template worker %d started", self.proc.pid)

    def call(self, body: bytes, deadline: float) -> bytearray:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        write_frame(self.proc.stdin.fileno(), body, deadline)
        reply = read_frame(self.proc.stdout.fileno(), _MAX_REPLY, deadline)
        if reply is None:
            raise WireClosed(partial=False)
        return reply

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, *, kill: bool = False) -> bytes:
        """Stop it (the end of its stdin asks it to; SIGKILL by pid if told to or if it
        lingers), reap it, and return the end of what it wrote to stderr."""
        if kill and self.alive():
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        try:
            self.proc.wait(_STOP_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        try:
            size = self.stderr.seek(0, os.SEEK_END)
            self.stderr.seek(max(size - _TAIL, 0))
            return self.stderr.read()
        except (OSError, ValueError):
            return b""
        finally:
            self.stderr.close()


def _without_image_data(message: Mapping[str, Any]) -> Mapping[str, Any]:
    images = message.get("images")
    return {**message, "images": [""] * len(images)} if images else message


def _plain(value: Any) -> Any:
    """value with each int past msgpack's range as a ``BIG_INT`` extension (rarely needed)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if -(2**63) <= value < 2**64:
            return value
        return msgspec.msgpack.Ext(BIG_INT, str(value).encode())
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class TemplateSandbox:
    """Renders chat templates out of process; call it as ``render_chat_template`` is called.

    Thread-safe and blocking: call it from a worker thread, never on the event loop."""

    def __init__(
        self,
        *,
        size: int = POOL_SIZE,
        timeout_s: float = RENDER_TIMEOUT_S,
        idle_s: float = IDLE_S,
        retire_rss: int = RETIRE_RSS,
        quarantine_s: float = QUARANTINE_S,
        on_failure: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.size, self.timeout_s, self.idle_s = max(size, 1), timeout_s, idle_s
        self.retire_rss, self.quarantine_s = retire_rss, quarantine_s
        # told each rendering it stops: "memory", "deadline", "crash" or "quarantined"
        self.on_failure = on_failure
        # hash(source) -> (when its rendering exhausted a worker, why), oldest first
        self._quarantine: collections.OrderedDict[int, tuple[float, str]] = (
            collections.OrderedDict()
        )
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []  # the most recently used last
        self._busy: set[_Worker] = set()
        self._starting = 0
        self._closed = False
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(Reply)  # type: ignore[var-annotated]

    def pids(self) -> list[int]:
        """The pids of the workers running now (idle or busy)."""
        with self._cond:
            return [w.proc.pid for w in (*self._idle, *self._busy)]

    def warm(self) -> None:
        """Start one worker now, unless there is one: the first rendering should not wait."""
        with self._cond:
            if self._closed or self._idle or self._busy or self._starting:
                return
            self._starting += 1
        try:
            worker = self._start()
        except OSError as exc:
            log.warning("cannot start a template worker: %s", exc)
            return
        self._checkin(worker)

    def __call__(
        self,
        source: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        bos_token: str | None = None,
        eos_token: str | None = None,
        **kwargs: Any,
    ) -> str:
        key = hash(source)  # (a str caches its hash: nothing to compute for a model's template)
        self._refuse_if_quarantined(key)
        request = Render(
            source=source,
            messages=[dict(_without_image_data(m)) for m in messages],
            tools=[dict(t) for t in tools] if tools else None,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            variables=kwargs,
        )
        try:
            body = self._encoder.encode(request)
        except (OverflowError, TypeError, msgspec.EncodeError):
            body = self._encoder.encode(_plain(msgspec.to_builtins(request, builtin_types=())))
        worker = self._checkout()
        try:
            reply = self._decoder.decode(worker.call(body, time.monotonic() + self.timeout_s))
        except WireTimeout:
            self._discard(worker)
            why = f"rendering the chat template took longer than {self.timeout_s:g} s"
            raise TemplateError(self._quarantined(key, "deadline", why)) from None
        except (WireClosed, OSError, ValueError, msgspec.DecodeError) as exc:
            if self._closed:  # (close() ended it: not the template's doing)
                self._discard(worker)
                raise TemplateError(_STOPPING) from None
            raise TemplateError(self._quarantined(key, *self._died(worker, exc))) from None
        except BaseException:
            self._discard(worker)
            raise
        self._checkin(worker, retire=reply.retire)
        if isinstance(reply, Refused):
            if reply.exhausted:
                raise TemplateError(self._quarantined(key, "memory", reply.detail))
            raise TemplateError(reply.detail)
        return reply.text

    def _quarantined(self, key: int, reason: str, why: str) -> str:
        """Remember that the template ``key`` exhausted a worker (``reason`` for the metrics,
        ``why`` for the client, which it returns)."""
        self.on_failure(reason)
        with self._cond:
            self._quarantine.pop(key, None)
            self._quarantine[key] = (time.monotonic(), why)
            while len(self._quarantine) > _QUARANTINED:
                self._quarantine.popitem(last=False)
        return why

    def _refuse_if_quarantined(self, key: int) -> None:
        with self._cond:
            when, why = self._quarantine.get(key, (None, ""))
            if when is None:
                return
            ago = time.monotonic() - when
            if ago >= self.quarantine_s:
                del self._quarantine[key]
                return
        self.on_failure("quarantined")
        raise TemplateError(
            f"{why} {ago:.0f} s ago; this chat template is not rendered again for"
            f" {self.quarantine_s - ago:.0f} s"
        )

    def close(self) -> None:
        """Stop every worker and reap it; renderings in flight fail. Idempotent."""
        with self._cond:
            self._closed = True
            idle, busy = list(self._idle), list(self._busy)
            self._idle.clear()
            self._cond.notify_all()
        for worker in busy:
            worker.proc.kill()  # its rendering thread sees the end, then reaps it
        for worker in idle:
            worker.close()
        with self._cond:
            self._cond.wait_for(lambda: not self._busy, timeout=2 * _STOP_S)

    def _checkout(self) -> _Worker:
        stale: list[_Worker] = []
        try:
            with self._cond:
                while True:
                    if self._closed:
                        raise TemplateError(_STOPPING)
                    now = time.monotonic()
                    while len(self._idle) > 1 and now - self._idle[0].idle_since > self.idle_s:
                        stale.append(self._idle.pop(0))
                    while self._idle:
                        worker = self._idle.pop()
                        if worker.alive():
                            self._busy.add(worker)
                            return worker
                        stale.append(worker)  # died while idle (killed from outside)
                    if len(self._busy) + self._starting < self.size:
                        self._starting += 1
                        break
                    self._cond.wait()
        finally:
            for worker in stale:
                worker.close()
        worker = self._start()
        with self._cond:
            self._busy.add(worker)
        return worker

    def _start(self) -> _Worker:
        """A new worker, for a slot already counted in ``_starting``."""
        try:
            return _Worker(self.retire_rss)
        finally:
            with self._cond:
                self._starting -= 1
                self._cond.notify()

    def _checkin(self, worker: _Worker, *, retire: bool = False) -> None:
        with self._cond:
            self._busy.discard(worker)
            keep = not (self._closed or retire) and worker.alive()
            if keep:
                worker.idle_since = time.monotonic()
                self._idle.append(worker)
            self._cond.notify_all()
        if not keep:
            worker.close()

    def _discard(self, worker: _Worker) -> bytes:
        """Kill and reap a worker that cannot be reused; the end of its stderr."""
        try:
            return worker.close(kill=True)
        finally:
            with self._cond:
                self._busy.discard(worker)
                self._cond.notify_all()

    def _died(self, worker: _Worker, exc: BaseException) -> tuple[str, str]:
        """Reap a worker that failed mid-rendering and log why: the reason ("memory" or
        "crash") and what to tell the client."""
        tail = self._discard(worker)
        code = worker.proc.returncode
        lines = [redact(x) for x in tail.decode(errors="replace").strip().splitlines()[-5:]]
        log.warning(
            "template worker %d exited (%s) while rendering (%s)%s",
            worker.proc.pid,
            f"code {code}" if code >= 0 else f"signal {-code}",
            exc,
            "".join(f"\n  {line}" for line in lines),
        )
        if _OOM_MARK in tail or code == -signal.SIGABRT:  # (only a failed allocation aborts it)
            return "memory", "rendering the chat template needs more memory than allowed"
        last = lines[-1] if lines else code
        return "crash", f"the chat template renderer exited while rendering ({last})"
