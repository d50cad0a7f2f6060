"""The runner's one inference thread, and the vocabulary thread it owns.

ggml (OpenMP) slows down by ~40 % once two OS threads of a process have decoded, so every engine
call that computes runs on this one long-lived thread, the load included. Requests wait in a
FIFO queue until a slot is free; the thread admits them between steps of the ``Scheduler`` and
results go back to the event loop through the ``Outbox``. ``Cancel`` of a queued request ends it
at once from the loop's thread; a running one is cancelled before the next step (an embedding
between two of its chunks). ``Tokenize`` and ``Detokenize`` go to the ``Vocab`` thread, started
once the model is loaded and ended before the engine is closed.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import queue
import threading

from proto import Detokenize, Done, Embed, Generate, LoadParams, Msg, Stats, Tokenize
from runner.batch import Scheduler
from runner.engine import Engine, LoadInfo
from runner.outbox import Outbox
from runner.progress import LoadProgress
from runner.vocab import Vocab

__all__ = ["Worker"]

log = logging.getLogger(__name__)

VOCAB_JOIN_S = 60.0  # the engine waits this long for a tokenization to end before it closes


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
        self._vocab: Vocab | None = None  # from the load on
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ called from the loop

    def load(self, params: LoadParams) -> concurrent.futures.Future[LoadInfo]:
        fut: concurrent.futures.Future[LoadInfo] = concurrent.futures.Future()
        self._loads.put((params, fut))
        return fut

    def submit(self, req: Generate | Embed | Tokenize | Detokenize) -> None:
        """Queue ``req`` (sent only after the load succeeded)."""
        if isinstance(req, Tokenize | Detokenize):
            assert self._vocab is not None  # (set before the load's future is)
            self._vocab.submit(req)
            return
        with self._lock:
            self._waiting.append(req)
        self._wake.set()

    def cancel(self, req_id: int) -> None:
        if self._vocab is not None and self._vocab.cancel(req_id):
            return
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
        """Cancel everything, let the current step finish (a load is abandoned at its next
        progress report), and end the thread."""
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
                progress = LoadProgress(self._outbox.push_threadsafe, self._stopping)
                try:
                    info = self._engine.load(params, progress)
                except BaseException as exc:  # reported to the gateway, never raised here
                    fut.set_exception(exc)
                else:
                    self._vocab = vocab = Vocab(self._engine, info.n_vocab, self._outbox)
                    fut.set_result(info)
                    self._serve(Scheduler(self._engine, info, self._emit, vocab=vocab))
        finally:
            self._close()

    def _close(self) -> None:
        vocab = self._vocab
        if vocab is not None:
            vocab.stop()
            if not vocab.join(VOCAB_JOIN_S):  # it still reads the model: leave it to the OS
                log.error("the vocabulary thread did not end: the engine is left open")
                return
        try:
            self._engine.close()
        except Exception:
            log.exception("closing the engine failed")

    def _serve(self, sched: Scheduler) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                with self._lock:
                    cancels, self._cancels = self._cancels, set()
                if cancels:  # first: the slots they free take the next requests at once
                    sched.cancel(cancels)
                for req in self._admit(sched.free_slots()):
                    if isinstance(req, Generate):
                        sched.admit(req)
                    else:
                        sched.admit_embed(req)
                if sched.busy:
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

    def _admit(self, free: int) -> list[Generate | Embed]:
        with self._lock:
            admitted: list[Generate | Embed] = []
            while self._waiting and len(admitted) < free:
                admitted.append(self._waiting.popleft())
        return admitted
