"""``Tokenize`` and ``Detokenize`` on a thread of their own, and the checks on what a request
may hand the vocabulary.

llama.cpp tokenizes about a MiB a second on a small CPU. On the event loop a long text would hold
up ``Ping`` (the gateway then kills the runner as hung, and every stream on it dies) and
``Cancel``; on the inference thread it would stall every sequence's generation. So requests that
only read the vocabulary are answered here, in order, on one long-lived thread. It never
decodes: a second thread slows ggml only once it has decoded (PERF-NOTES), and the vocabulary is
read-only once the model is loaded (llama-server tokenizes on its HTTP threads too). The texts of
``Embed`` requests are tokenized here as well, ahead of their decodes (``run``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

from proto import (
    MAX_TOKENIZE_BYTES,
    Detokenize,
    Detokenized,
    Done,
    ErrorCode,
    Failed,
    Msg,
    Stats,
    Tokenize,
    Tokenized,
)
from runner.engine import BadRequestError, Engine
from runner.outbox import Outbox

__all__ = ["Vocab", "check_text", "check_tokens"]

log = logging.getLogger(__name__)


def check_text(text: str, what: str) -> None:
    """``BadRequestError`` when ``text`` is more than a runner tokenizes for one request."""
    if len(text) <= MAX_TOKENIZE_BYTES // 4:  # (no need to count: 4 bytes a character at most)
        return
    size = len(text.encode(errors="surrogatepass"))
    if size > MAX_TOKENIZE_BYTES:
        raise BadRequestError(
            f"{what} is {size:,} bytes of text, over the limit of {MAX_TOKENIZE_BYTES >> 20} MiB"
            f" ({MAX_TOKENIZE_BYTES:,} bytes) that a model runner tokenizes for one request"
        )


def check_tokens(tokens: Sequence[int], n_vocab: int, what: str) -> None:
    """``BadRequestError`` naming the first id in ``tokens`` that is not in the vocabulary."""
    for i, token in enumerate(tokens):
        if not 0 <= token < n_vocab:
            raise BadRequestError(
                f"invalid {what}: token id {token} (at index {i}) is not in the model's"
                f" vocabulary, ids 0 to {n_vocab - 1}"
            )


_Job = Tokenize | Detokenize | Callable[[], None]


class Vocab:
    """Answers ``Tokenize`` and ``Detokenize`` in arrival order; a queued one can be cancelled.
    Other work that only reads the vocabulary (``run``) takes its turn in the same queue."""

    def __init__(self, engine: Engine, n_vocab: int, outbox: Outbox) -> None:
        self._engine = engine
        self.n_vocab = n_vocab
        self._outbox = outbox
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending: set[int] = set()  # ids queued or being answered
        self._cancelled: set[int] = set()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="vocab", daemon=True)
        self._thread.start()

    def submit(self, msg: Tokenize | Detokenize) -> None:
        with self._lock:
            self._pending.add(msg.id)
        self._jobs.put(msg)

    def run(self, job: Callable[[], None]) -> None:
        """Call ``job`` on the thread after what is queued (never once stopping); it must not
        raise and must check for itself whether it is still wanted."""
        self._jobs.put(job)

    def cancel(self, req_id: int) -> bool:
        """Skip request ``req_id`` if it has not started (a started one is answered anyway);
        False when it is not one of ours."""
        with self._lock:
            if req_id not in self._pending:
                return False
            self._cancelled.add(req_id)
            return True

    def stop(self) -> None:
        """Answer what is queued with ``Done(cancel)``, finish the current one, and end."""
        with self._lock:
            self._stopping = True
        self._jobs.put(None)

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the thread to end; False if it is still running after ``timeout_s``."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (msg := self._jobs.get()) is not None:
            if not isinstance(msg, Tokenize | Detokenize):
                with self._lock:
                    stopping = self._stopping
                if not stopping:
                    msg()
                continue
            with self._lock:
                skip = self._stopping or msg.id in self._cancelled
            reply = Done(id=msg.id, reason="cancel", stats=Stats()) if skip else self._answer(msg)
            with self._lock:
                self._pending.discard(msg.id)
                self._cancelled.discard(msg.id)
            self._outbox.push_threadsafe(reply)

    def _answer(self, msg: Tokenize | Detokenize) -> Msg:
        try:
            if isinstance(msg, Tokenize):
                check_text(msg.text, "the text to tokenize")
                tokens = self._engine.tokenize(
                    msg.text, add_special=msg.add_special, parse_special=msg.parse_special
                )
                return Tokenized(id=msg.id, tokens=tuple(tokens))
            check_tokens(msg.tokens, self.n_vocab, "tokens to detokenize")
            return Detokenized(id=msg.id, text=self._engine.detokenize(msg.tokens))
        except BadRequestError as exc:
            return Failed(id=msg.id, code=ErrorCode.BAD_REQUEST, message=str(exc))
        except Exception as exc:  # a bug: this request fails, the thread goes on
            log.exception("answering request %d failed", msg.id)
            return Failed(
                id=msg.id, code=ErrorCode.INTERNAL, message=f"{type(exc).__name__}: {exc}"
            )
