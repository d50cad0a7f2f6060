"""The runner's one inference thread.

ggml (OpenMP) slows down by ~40 % once two OS threads of a process have decoded, so every engine
call that computes runs on this one long-lived thread, the load included. Requests wait in a
FIFO queue until a slot is free; the thread admits them between steps of the ``Scheduler`` and
results go back to the event loop through the ``Outbox``. ``Cancel`` of a queued request ends it
at once from the loop's thread; a running one is cancelled before the next step.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import queue
import threading
import time

from proto import Done, Embed, Embeddings, ErrorCode, Failed, Generate, LoadParams, Msg, Stats
from runner.batch import Scheduler
from runner.engine import BadRequestError, Engine, EngineError, LoadInfo
from runner.outbox import Outbox

__all__ = ["Worker"]

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, engine: Engine, outbox: Outbox) -> None:
        self._engine = engine
        self._outbox = outbox
        self._loads: queue.SimpleQueue[
            tuple[LoadParams, concurrent.futures.Future[LoadInfo]] | None
        ] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiting: collections.deque[Generate | Embed] = collections.deque()
        self._cancels: set[int] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ called from the loop

    def load(self, params: LoadParams) -> concurrent.futures.Future[LoadInfo]:
        fut: concurrent.futures.Future[LoadInfo] = concurrent.futures.Future()
        self._loads.put((params, fut))
        return fut

    def submit(self, req: Generate | Embed) -> None:
        with self._lock:
            self._waiting.append(req)
        self._wake.set()

    def cancel(self, req_id: int) -> None:
        with self._lock:
            for i, req in enumerate(self._waiting):
                if req.id == req_id:
                    del self._waiting[i]
                    break
            else:
                self._cancels.add(req_id)
                self._wake.set()
                return
        self._outbox.push_threadsafe(Done(id=req_id, reason="cancel", stats=Stats()))

    def stop(self) -> None:
        """Cancel everything, let the current step finish, and end the thread."""
        self._stopping.set()
        self._loads.put(None)
        self._wake.set()

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    # ------------------------------------------------------------------ the thread

    def _emit(self, msgs: list[Msg]) -> None:
        self._outbox.push_many_threadsafe(msgs)

    def _run(self) -> None:
        try:
            job = self._loads.get()
            if job is not None:
                params, fut = job
                try:
                    info = self._engine.load(params)
                except BaseException as exc:  # reported to the gateway, never raised here
                    fut.set_exception(exc)
                else:
                    fut.set_result(info)
                    self._serve(Scheduler(self._engine, info, self._emit))
        finally:
            try:
                self._engine.close()
            except Exception:
                log.exception("closing the engine failed")

    def _serve(self, sched: Scheduler) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            with self._lock:
                cancels, self._cancels = self._cancels, set()
                admitted: list[Generate | Embed] = []
                while self._waiting and len(admitted) < sched.free_slots():
                    admitted.append(self._waiting.popleft())
            try:
                for req in admitted:
                    if isinstance(req, Generate):
                        sched.admit(req)
                    else:
                        self._embed(sched, req)
                if cancels:
                    sched.cancel(cancels)
                if sched.active:
                    sched.step()
                elif not self._waiting:  # (a slot freed by a cancel may admit one now)
                    self._wake.wait()
            except Exception as exc:  # a bug: fail what runs, keep serving
                log.exception("the inference loop failed")
                sched.fail_all(f"{type(exc).__name__}: {exc}")
                for slot in sched.slots:
                    sched.truncate(slot, 0)
        sched.cancel_all()
        with self._lock:
            left, self._waiting = list(self._waiting), collections.deque()
        self._emit([Done(id=r.id, reason="cancel", stats=Stats()) for r in left])

    def _embed(self, sched: Scheduler, req: Embed) -> None:
        """Embed between steps on a free slot, whose cache it leaves empty."""
        started = time.perf_counter()
        slot, _ = sched.take_slot([])
        sched.truncate(slot, 0)
        try:
            vectors, n_tokens = self._engine.embed(
                slot.index, req.inputs, truncate=req.truncate, normalize=req.normalize
            )
        except BadRequestError as exc:
            self._emit([Failed(id=req.id, code=ErrorCode.BAD_REQUEST, message=str(exc))])
            return
        except EngineError as exc:
            self._emit([Failed(id=req.id, code=ErrorCode.INTERNAL, message=str(exc))])
            return
        finally:
            slot.cached.clear()
        stats = Stats(prompt_tokens=n_tokens, prompt_eval_s=time.perf_counter() - started)
        self._emit(
            [
                Embeddings(
                    id=req.id, vectors=tuple(tuple(v) for v in vectors), prompt_tokens=n_tokens
                ),
                Done(id=req.id, reason="stop", stats=stats),
            ]
        )
