"""The runner's one inference thread.

ggml (OpenMP) slows down by ~40 % once two OS threads of a process have decoded, so every engine
call that computes runs on this one long-lived thread, the load included. It takes jobs from a
queue; results go back to the event loop through the ``Outbox``. ``Cancel`` sets a per-request
``threading.Event`` that the generation loop checks after every token.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable

from proto import (
    Done,
    Embed,
    Embeddings,
    ErrorCode,
    Failed,
    Generate,
    LoadParams,
    Stats,
    TokenLogprob,
    Tokens,
)
from runner.engine import Engine, EngineError, GenStats, LoadInfo, PromptTooLongError
from runner.outbox import Outbox
from runner.output import TextAssembler

__all__ = ["Worker"]

log = logging.getLogger(__name__)

_Job = Callable[[], None]


class Worker:
    def __init__(self, engine: Engine, outbox: Outbox) -> None:
        self._engine = engine
        self._outbox = outbox
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._cancels: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ called from the loop

    def load(self, params: LoadParams) -> concurrent.futures.Future[LoadInfo]:
        fut: concurrent.futures.Future[LoadInfo] = concurrent.futures.Future()

        def job() -> None:
            try:
                fut.set_result(self._engine.load(params))
            except BaseException as exc:  # reported to the gateway, never raised here
                fut.set_exception(exc)

        self._jobs.put(job)
        return fut

    def submit(self, req: Generate | Embed) -> None:
        with self._lock:
            self._cancels[req.id] = threading.Event()
        if isinstance(req, Generate):
            self._jobs.put(lambda: self._guarded(req.id, lambda: self._generate(req)))
        else:
            self._jobs.put(lambda: self._guarded(req.id, lambda: self._embed(req)))

    def cancel(self, req_id: int) -> None:
        with self._lock:
            event = self._cancels.get(req_id)
        if event is not None:
            event.set()

    def stop(self) -> None:
        """Cancel everything, let the current token finish, and end the thread."""
        self._stopping.set()
        with self._lock:
            for event in self._cancels.values():
                event.set()
        self._jobs.put(None)

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            job()
        try:
            self._engine.close()
        except Exception:
            log.exception("closing the engine failed")

    def _guarded(self, req_id: int, body: Callable[[], None]) -> None:
        with self._lock:
            cancel = self._cancels[req_id]
        try:
            if cancel.is_set():
                self._outbox.push_threadsafe(Done(id=req_id, reason="cancel", stats=Stats()))
            else:
                body()
        except PromptTooLongError as exc:
            self._fail(req_id, ErrorCode.BAD_REQUEST, str(exc))
        except EngineError as exc:
            self._fail(req_id, ErrorCode.INTERNAL, str(exc))
        except Exception as exc:
            log.exception("request %d failed", req_id)
            self._fail(req_id, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._cancels.pop(req_id, None)

    def _fail(self, req_id: int, code: ErrorCode, message: str) -> None:
        self._outbox.push_threadsafe(Failed(id=req_id, code=code, message=message))

    def _generate(self, req: Generate) -> None:
        engine, push = self._engine, self._outbox.push_threadsafe
        with self._lock:
            cancel = self._cancels[req.id]
        started = time.perf_counter()
        prompt = list(req.tokens)  # e.g. /api/generate's `context`, then the new text
        if req.prompt:
            add_bos = req.add_bos and not prompt
            prompt += engine.tokenize(req.prompt, add_special=add_bos, parse_special=True)
        stats = GenStats()
        text_out = TextAssembler(req.stop)
        ids: list[int] = []
        probs: list[TokenLogprob] = []
        first = True
        count = 0
        reason: str = "length" if req.num_predict == 0 else "stop"
        if req.num_predict != 0:
            gen = engine.generate(req, prompt, stats)
            try:
                for sampled in gen:
                    if cancel.is_set():
                        reason = "cancel"
                        break
                    if engine.is_eog(sampled.token):
                        break
                    count += 1
                    ids.append(sampled.token)
                    if sampled.logprob is not None:
                        probs.append(sampled.logprob)
                    text = text_out.feed(engine.piece(sampled.token))
                    if text:
                        push(
                            Tokens(
                                id=req.id,
                                text=text,
                                ids=tuple(ids),
                                logprobs=tuple(probs),
                                first=first,
                            )
                        )
                        first = False
                        ids, probs = [], []
                    if text_out.stopped:
                        break
                    if 0 < req.num_predict <= count:
                        reason = "length"
                        break
                else:
                    reason = "length"  # the context filled and shifting was not allowed
            finally:
                gen.close()
        tail = "" if reason == "cancel" else text_out.flush()
        if tail or ids:
            push(Tokens(id=req.id, text=tail, ids=tuple(ids), logprobs=tuple(probs), first=first))
        ended = time.perf_counter()
        eval_s = max(0.0, ended - started - stats.prompt_eval_s)
        push(
            Done(
                id=req.id,
                reason=reason,  # type: ignore[arg-type]
                stats=Stats(
                    prompt_tokens=stats.prompt_tokens,
                    prompt_cached=stats.prompt_cached,
                    prompt_eval_s=stats.prompt_eval_s,
                    eval_tokens=count,
                    eval_s=eval_s,
                ),
                context=tuple(stats.context),
            )
        )

    def _embed(self, req: Embed) -> None:
        started = time.perf_counter()
        vectors, n_tokens = self._engine.embed(req.inputs, truncate=req.truncate)
        push = self._outbox.push_threadsafe
        push(
            Embeddings(id=req.id, vectors=tuple(tuple(v) for v in vectors), prompt_tokens=n_tokens)
        )
        elapsed = time.perf_counter() - started
        push(
            Done(
                id=req.id,
                reason="stop",
                stats=Stats(prompt_tokens=n_tokens, prompt_eval_s=elapsed),
            )
        )
