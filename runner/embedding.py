"""``Embed`` requests as work the scheduler advances one packed decode per step.

Each step evaluates one embedding decode that packs whole texts, from every running ``Embed``
request, each text in an embedding sequence of its own, up to ``n_batch`` tokens and
``embed_seqs`` texts (llama-server packs one text per slot; a RAG ingestion sends thousands of
short ones, so the per-decode cost is shared by as many as fit). While sequences generate, a
decode packs only ``SHARED_TOKENS`` (one text at least): a full one takes over a second on two
cores, and every stream would wait that long for each of its tokens. Requests take turns at the
head of the decode, so a large batch does not starve a small one. A text longer than a decode
goes in parts, each in a decode of its own. Between two decodes the generating sequences take
their step and a ``Cancel`` ends a request, so a batch of thousands of inputs neither stalls
other clients' streams nor outlives a client that went away.

A request holds a slot from admission to its end (so admission counts it like the gateway's
seats do) but leaves the slot's cache alone: its texts live in the engine's embedding
sequences. Vectors go out in input order as they pile up (``FRAME_VECTORS`` or
``FRAME_FLOATS`` to a frame), then ``Done``.

Texts are tokenized on the ``Vocab`` thread, a little ahead of their decodes (twice a decode's
texts and tokens), never on this one: one 8 MiB input took seconds to tokenize, and every stream
froze that long. A request's texts go into decodes once enough of them are tokenized to fill one
(so a decode packs the same texts as if they had been tokenized in place); a step with nothing
else to do waits ``TOKENIZE_WAIT_S`` at most for them and hands back to the worker, which
admits requests and cancels between steps. Token ids sent as they are (``Embed.tokens``) are
checked against the vocabulary there too. An input with no token to embed (an empty text for a
model that adds no BOS token) is a bad request, not a vector of zeros.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from proto import Done, Embed, Embeddings, ErrorCode, Failed, Msg, Stats
from runner.engine import BadRequestError, EmbedPart, Engine, EngineError, PromptTooLongError
from runner.slots import Slot
from runner.vocab import Vocab, check_tokens

__all__ = ["FRAME_FLOATS", "FRAME_VECTORS", "TOKENIZE_WAIT_S", "EmbedBatch", "EmbedJob"]

log = logging.getLogger(__name__)

FRAME_VECTORS = 64  # vectors sent together at most...
FRAME_FLOATS = 1 << 16  # ...and floats (about 600 kB of msgpack), so no frame nears MAX_FRAME

SHARED_TOKENS = 64  # tokens of texts a decode packs while sequences generate (one text at least)

TOKENIZE_WAIT_S = 0.05  # a step with nothing to decode waits this long for tokenized texts

_Send = Callable[["EmbedJob", list[Msg]], None]


class EmbedJob:
    """``req`` (one input at least) in ``slot``, from admission to its ``Done``."""

    def __init__(self, req: Embed, slot: Slot, n_ctx: int) -> None:
        self.req = req
        self.slot = slot
        self.n_ctx = n_ctx  # the request's context (at most the runner's)
        self.count = len(req.tokens) or len(req.inputs)  # inputs: token arrays, or else texts
        self.started = time.perf_counter()
        self.next = 0  # the input to pack next
        self._queued = 0  # inputs handed to the tokenizer so far
        self._lock = threading.Lock()  # (for what the tokenizing thread hands over)
        self._ahead: collections.deque[list[int] | Exception] = collections.deque()
        self._ahead_tokens = 0
        self._stopped = False
        self._tokens = 0  # of the inputs packed so far
        self._sent = 0  # vectors sent so far
        self._ready: list[tuple[float, ...]] = []  # vectors not sent yet
        self._ready_floats = 0
        self._ready_tokens = 0

    @property
    def exhausted(self) -> bool:
        return self.next >= self.count

    def tokens_of(self, index: int, engine: Engine, n_vocab: int) -> list[int]:
        """The tokens to embed for input ``index`` (``n_vocab`` 0: ids unchecked); a
        ``BadRequestError`` when it is too long and may not be cut, or has no token at all."""
        req = self.req
        if req.tokens:
            ids = list(req.tokens[index])
            if n_vocab:
                check_tokens(ids, n_vocab, f"input {index}")
            if len(ids) > self.n_ctx:
                if not req.truncate:
                    raise PromptTooLongError("the input length exceeds the context length")
                del ids[self.n_ctx :]
            if not ids:
                raise BadRequestError(f"input {index} holds no token ids: nothing to embed")
            return ids
        ids = engine.embed_tokens(req.inputs[index], n_ctx=self.n_ctx, truncate=req.truncate)
        if not ids:
            raise BadRequestError(
                f"input {index} is empty, and this model adds no BOS token: nothing to embed"
            )
        return ids

    def wants(self, inputs: int, tokens: int) -> bool:
        """Whether to tokenize one more input: fewer than ``inputs`` wait to be packed and
        they hold ``tokens`` at most."""
        with self._lock:
            return (
                not self._stopped
                and self._queued < self.count
                and self._queued - self.next < inputs
                and self._ahead_tokens <= tokens
                and not (self._ahead and isinstance(self._ahead[-1], Exception))
            )

    def queue_next(self) -> int:
        """The input to tokenize next, counted as handed over."""
        self._queued += 1
        return self._queued - 1

    def deliver(self, result: list[int] | Exception) -> None:
        """From the tokenizing thread: the next input's tokens, or why it has none."""
        with self._lock:
            if self._stopped:
                return
            self._ahead.append(result)
            if not isinstance(result, Exception):
                self._ahead_tokens += len(result)

    def ready(self, n_seqs: int, n_batch: int) -> bool:
        """Whether enough inputs are tokenized to pack a whole decode of them (``n_seqs``
        texts or ``n_batch`` tokens), or the rest of them (or up to one that failed)."""
        with self._lock:
            ahead = self._ahead
            return (
                len(ahead) >= min(self.count - self.next, n_seqs)
                or self._ahead_tokens > n_batch
                or (bool(ahead) and isinstance(ahead[-1], Exception))
            )

    def peek(self) -> list[int] | None:
        """The tokens of the next input, None while it is being tokenized; raises why it has
        none (``BadRequestError`` when it is too long and may not be cut)."""
        with self._lock:
            if not self._ahead:
                return None
            head = self._ahead[0]
        if isinstance(head, Exception):
            raise head
        return head

    def take(self) -> list[int]:
        """The peeked input, now packed into a decode."""
        with self._lock:
            tokens = self._ahead.popleft()
            assert not isinstance(tokens, Exception)
            self._ahead_tokens -= len(tokens)
        self.next += 1
        self._tokens += len(tokens)
        return tokens

    def stop(self) -> None:
        """Pack (and tokenize) nothing more of it."""
        self.next = self.count
        with self._lock:
            self._stopped = True
            self._ahead.clear()
            self._ahead_tokens = 0

    def vector(self, vec: list[float], n_tokens: int) -> list[Msg]:
        """Take the next input's vector; the messages ready to send, ending in ``Done`` after
        the last one."""
        arr = np.asarray(vec, dtype=np.float64)
        if self.req.normalize:
            norm = float(np.linalg.norm(arr))
            if norm > 0:
                arr = arr / norm
        self._ready.append(tuple(arr.tolist()))
        self._ready_floats += len(vec)
        self._ready_tokens += n_tokens
        last = self.exhausted and self._pending == 0
        out: list[Msg] = []
        if last or len(self._ready) >= FRAME_VECTORS or self._ready_floats >= FRAME_FLOATS:
            out.append(self._flush())
        if last:
            out.append(Done(id=self.req.id, reason="stop", stats=self.stats()))
        return out

    @property
    def _pending(self) -> int:
        """Inputs packed whose vector has not come back."""
        return self.next - self._sent - len(self._ready)

    def _flush(self) -> Embeddings:
        msg = Embeddings(
            id=self.req.id, vectors=tuple(self._ready), prompt_tokens=self._ready_tokens
        )
        self._sent += len(self._ready)
        self._ready, self._ready_floats, self._ready_tokens = [], 0, 0
        return msg

    def stats(self) -> Stats:
        return Stats(prompt_tokens=self._tokens, prompt_eval_s=time.perf_counter() - self.started)


class _Text:
    """A text being embedded: its tokens and how many are evaluated."""

    __slots__ = ("done", "job", "tokens")

    def __init__(self, job: EmbedJob, tokens: list[int]) -> None:
        self.job = job
        self.tokens = tokens
        self.done = 0


class EmbedBatch:
    """The running ``EmbedJob`` s and the packing of their texts into decodes."""

    def __init__(
        self, engine: Engine, *, n_batch: int, n_seqs: int, vocab: Vocab | None = None
    ) -> None:
        """``vocab``: the thread that tokenizes (without one, texts are tokenized here, in
        turn)."""
        self._engine = engine
        self._vocab = vocab
        self._n_batch = max(1, n_batch)
        self._n_seqs = max(1, n_seqs)
        self.jobs: list[EmbedJob] = []  # in admission order
        self._turn = 0  # the job at the head of the next decode
        self._split: _Text | None = None  # a text longer than a decode, between two parts
        self._tokenized = threading.Event()  # a job became ready to pack

    def add(self, job: EmbedJob) -> None:
        self.jobs.append(job)
        self._tokenize_ahead(job)

    def remove(self, job: EmbedJob) -> None:
        """Stop ``job`` where it is (a text it left half-evaluated is forgotten)."""
        self.jobs.remove(job)
        job.stop()
        split = self._split
        if split is not None and split.job is job:
            self._split = None
            self._engine.embed_forget(0)

    def _tokenize_ahead(self, job: EmbedJob) -> None:
        vocab = self._vocab
        n_vocab = vocab.n_vocab if vocab is not None else 0
        while job.wants(2 * self._n_seqs, 2 * self._n_batch):
            work = functools.partial(self._tokenize, job, job.queue_next(), n_vocab)
            if vocab is None:
                work()
            else:
                vocab.run(work)

    def _tokenize(self, job: EmbedJob, index: int, n_vocab: int) -> None:
        """On the tokenizing thread: input ``index`` of ``job``, handed to it."""
        result: list[int] | Exception
        try:
            result = job.tokens_of(index, self._engine, n_vocab)
        except Exception as exc:  # (raised again where the input is packed)
            result = exc
        job.deliver(result)
        if job.ready(self._n_seqs, self._n_batch):
            self._tokenized.set()

    def step(self, *, shared: bool) -> list[tuple[EmbedJob, list[Msg]]]:
        """One decode (``shared``: sequences generate beside it); each job's messages, a job
        that ended ending in ``Done`` or ``Failed`` (the caller removes it). With nothing to
        decode and nothing else to do, it waits a little for texts being tokenized."""
        out: dict[int, tuple[EmbedJob, list[Msg]]] = {}

        def send(job: EmbedJob, msgs: list[Msg]) -> None:
            out.setdefault(id(job), (job, []))[1].extend(msgs)

        self._tokenized.clear()
        for job in self.jobs:
            self._tokenize_ahead(job)
        texts = self._pack(send, min(SHARED_TOKENS, self._n_batch) if shared else self._n_batch)
        if not texts and not shared and not out and self._vocab is not None:
            self._tokenized.wait(TOKENIZE_WAIT_S)
        if texts:
            parts = [self._part(seq, text) for seq, text in enumerate(texts)]
            try:
                vectors = self._engine.embed(parts)
            except EngineError as exc:
                self._split = None
                for text in texts:
                    if not _ended(out.get(id(text.job))):
                        send(text.job, [_failed(text.job, ErrorCode.INTERNAL, str(exc))])
            else:
                for text, part, vec in zip(texts, parts, vectors, strict=True):
                    text.done += len(part.tokens)
                    if vec is None:
                        self._split = text
                    elif not _ended(out.get(id(text.job))):
                        send(text.job, text.job.vector(vec, len(text.tokens)))
        return list(out.values())

    def _part(self, seq: int, text: _Text) -> EmbedPart:
        end = min(len(text.tokens), text.done + self._n_batch)
        return EmbedPart(seq, text.tokens[text.done : end], text.done, end == len(text.tokens))

    def _pack(self, send: _Send, budget: int) -> list[_Text]:
        """The texts of the next decode: a split text alone, else whole texts in turn from
        each job, as many as fit ``budget`` tokens, the first one whatever its length (a text
        longer than a decode starts alone, in parts)."""
        if self._split is not None:
            split, self._split = self._split, None
            return [split]
        jobs = self.jobs
        if not jobs:
            return []
        self._turn %= len(jobs)
        order = jobs[self._turn :] + jobs[: self._turn]
        self._turn += 1
        texts: list[_Text] = []
        for job in order:
            if not job.ready(self._n_seqs, self._n_batch):
                continue  # still being tokenized
            while not job.exhausted and len(texts) < self._n_seqs:
                tokens = self._peek(job, send)
                if tokens is None:
                    break  # the job failed, or its next text is being tokenized
                n = len(tokens)
                if n > budget and texts:
                    break  # it waits for the next decode
                texts.append(_Text(job, job.take()))
                if n > self._n_batch:
                    return texts  # longer than a decode: alone, in parts
                budget -= n
            if len(texts) >= self._n_seqs:
                break
        return texts

    def _peek(self, job: EmbedJob, send: _Send) -> list[int] | None:
        try:
            return job.peek()
        except BadRequestError as exc:
            send(job, [_failed(job, ErrorCode.BAD_REQUEST, str(exc))])
        except EngineError as exc:
            send(job, [_failed(job, ErrorCode.INTERNAL, str(exc))])
        except Exception as exc:  # a bug: this request fails, the others go on
            log.exception("embedding for request %d failed", job.req.id)
            send(job, [_failed(job, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")])
        job.stop()
        return None


def _failed(job: EmbedJob, code: ErrorCode, message: str) -> Failed:
    return Failed(id=job.req.id, code=code, message=message)


def _ended(entry: tuple[EmbedJob, list[Msg]] | None) -> bool:
    return entry is not None and bool(entry[1]) and isinstance(entry[1][-1], Done | Failed)
