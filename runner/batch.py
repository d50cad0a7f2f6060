"""Continuous batching: every running sequence advances in one decode per step.

A step takes, in admission order, one token from each sequence that is generating, then fills
what is left of the batch (``n_batch``) with prompt chunks of sequences still on their prompt,
so a long prompt is evaluated a piece per step while the others keep decoding. After the decode
each sequence whose last token had logits samples from its own row. The batch lists sequences
by ascending id: llama.cpp computes a run of consecutive ids as one ubatch, and admission order
would otherwise split a step of four decodes into up to four graph computes. A request joins at
the next step; a finished, failed or cancelled one frees its slot at once.

An ``Embed`` request holds a slot too, and each step ends with one embedding decode that packs
texts of every running ``Embed`` (``runner.embedding``), so a large batch of inputs shares the
thread with the generating sequences and stops between two decodes when cancelled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from proto import Done, Embed, Embeddings, ErrorCode, Failed, Generate, Msg, Stats, Tokens
from runner import media
from runner.embedding import EmbedBatch, EmbedJob
from runner.engine import BadRequestError, Chunk, Engine, EngineError, LoadInfo, Span
from runner.slots import Seq, Slot, copy_min, pick_donor, pick_slot
from runner.vocab import Vocab, check_text

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)

Emit = Callable[[list[Msg]], None]


class Scheduler:
    def __init__(
        self, engine: Engine, info: LoadInfo, emit: Emit, *, vocab: Vocab | None = None
    ) -> None:
        """``vocab``: the thread that tokenizes embedding inputs (without one, the inference
        thread does, in turn)."""
        self._engine = engine
        self._emit = emit
        self._n_ctx = info.n_ctx
        self._n_vocab = info.n_vocab
        self._n_batch = max(info.n_batch, info.num_parallel)
        self._copy_min = copy_min(info.n_ctx) if info.copies_prefix else 0  # 0: never copy
        self.slots = [Slot(i) for i in range(info.num_parallel)]
        self.active: list[Seq] = []  # in admission order
        self._embeds = EmbedBatch(engine, n_batch=info.n_batch, n_seqs=info.embed_seqs, vocab=vocab)
        self._uses = 0

    @property
    def embeds(self) -> list[EmbedJob]:
        return self._embeds.jobs

    @property
    def busy(self) -> bool:
        return bool(self.active or self.embeds)

    def free_slots(self) -> int:
        return len(self.slots) - len(self.active) - len(self.embeds)

    def context_of(self, wanted: int) -> int:
        """The context a request that asks for ``wanted`` tokens gets (0: the runner's)."""
        return self._n_ctx if wanted <= 0 else min(wanted, self._n_ctx)

    def take_slot(self, prompt: list[int]) -> tuple[Slot, int]:
        slot, common = pick_slot(self.slots, prompt, copy_min=self._copy_min)
        self._uses += 1
        slot.used = self._uses
        return slot, common

    # ------------------------------------------------------------------ admission

    def admit(self, req: Generate) -> None:
        """Start ``req`` in a free slot (or end it at once); errors go out as ``Failed``."""
        engine = self._engine
        n_ctx = self.context_of(req.n_ctx)
        try:
            prompt, spans = media.request_prompt(engine, req, n_ctx, n_vocab=self._n_vocab)
            if req.num_predict == 0:
                stats = Stats(prompt_tokens=len(prompt))
                self._emit([Done(id=req.id, reason="length", stats=stats)])
                return
            sampler = engine.sampler(req, prompt)
        except BadRequestError as exc:
            self._emit([Failed(id=req.id, code=ErrorCode.BAD_REQUEST, message=str(exc))])
            return
        except EngineError as exc:
            self._emit([Failed(id=req.id, code=ErrorCode.INTERNAL, message=str(exc))])
            return
        except Exception as exc:  # a bug: this request fails, the others go on
            log.exception("admitting request %d failed", req.id)
            message = f"{type(exc).__name__}: {exc}"
            self._emit([Failed(id=req.id, code=ErrorCode.INTERNAL, message=message)])
            return
        slot, common = self.take_slot(prompt)
        common = min(common, len(prompt) - 1)  # evaluate one token at least, for its logits
        keep = media.reuse(spans, common)
        if self._copy_min:
            keep = self._copy_prefix(slot, prompt, spans, keep)
        self.truncate(slot, keep)
        seq = Seq(req, slot, prompt, sampler, len(slot.cached), n_ctx)
        seq.spans = spans
        slot.seq = seq
        self.active.append(seq)

    def _copy_prefix(self, slot: Slot, prompt: list[int], spans: list[Span], keep: int) -> int:
        """Copy into ``slot`` the longest prefix of ``prompt`` another slot holds, when that
        spares at least ``copy_min`` tokens over the ``keep`` it holds itself; what it holds
        now."""
        donor, shared = pick_donor(self.slots, slot, prompt)
        shared = media.reuse(spans, min(shared, len(prompt) - 1))
        if donor is None or shared - keep < self._copy_min:
            return keep
        if not self._engine.copy_prefix(donor.index, slot.index, shared):
            log.warning("copying %d cached tokens from slot %d failed", shared, donor.index)
            slot.cached.clear()
            return 0
        log.debug("slot %d: %d prompt tokens copied from slot %d", slot.index, shared, donor.index)
        slot.cached[:] = donor.cached[:shared]
        return shared

    def admit_embed(self, req: Embed) -> None:
        """Start ``req`` in a free slot (its cache is kept); errors go out as ``Failed``."""
        if not req.inputs and not req.tokens:
            self._emit([Embeddings(id=req.id, vectors=(), prompt_tokens=0),
                        Done(id=req.id, reason="stop", stats=Stats())])  # fmt: skip
            return
        try:
            for i, text in enumerate(req.inputs):
                check_text(text, f"input {i}")
        except BadRequestError as exc:
            self._emit([Failed(id=req.id, code=ErrorCode.BAD_REQUEST, message=str(exc))])
            return
        slot, _ = self.take_slot([])
        slot.embedding = True
        self._embeds.add(EmbedJob(req, slot, self.context_of(req.n_ctx)))

    def truncate(self, slot: Slot, keep: int) -> None:
        if keep < len(slot.cached):
            if not self._engine.forget(slot.index, keep):
                self._engine.forget(slot.index, 0)
                keep = 0
            del slot.cached[keep:]

    # ------------------------------------------------------------------ the step

    def step(self) -> None:
        """One decode over every generating sequence (sample, emit, retire the finished), then
        one embedding decode."""
        out: list[Msg] = []
        chunks: list[Chunk] = []
        owners: list[Seq | None] = []  # who samples after each chunk
        budget = self._n_batch
        for seq in list(self.active):
            if seq.pending < 0:
                continue  # still on its prompt
            slot = seq.slot
            if len(slot.cached) >= seq.n_ctx and not self._make_room(seq, out):
                continue
            chunks.append(Chunk(slot.index, [seq.pending], len(slot.cached), True))
            owners.append(seq)
            budget -= 1
        for seq in list(self.active):
            if seq.n_eval >= len(seq.prompt):
                continue
            if budget <= 0:
                break
            end = self._feed_media(seq, out) if seq.spans else len(seq.prompt)
            if end < 0:
                continue
            n = min(budget, end - seq.n_eval)
            last = seq.n_eval + n == len(seq.prompt)
            tokens = seq.prompt[seq.n_eval : seq.n_eval + n]
            chunks.append(Chunk(seq.slot.index, tokens, len(seq.slot.cached), last))
            owners.append(seq if last else None)
            seq.n_eval += n
            budget -= n
        if chunks:
            if len(chunks) > 1:
                # Ascending sequence ids: with one KV stream per sequence, llama.cpp puts
                # only runs of consecutive ids into one ubatch (one graph compute each).
                order = sorted(range(len(chunks)), key=lambda k: chunks[k].seq)
                chunks = [chunks[k] for k in order]
                owners = [owners[k] for k in order]
            self._decode(chunks, owners, out)
        if out:
            self._emit(out)
        if self._embeds.jobs:
            out = []
            for job, msgs in self._embeds.step(shared=bool(self.active)):
                if msgs and isinstance(msgs[-1], Done | Failed):
                    self._release_embed(job)
                out.extend(msgs)
            if out:
                self._emit(out)

    def _feed_media(self, seq: Seq, out: list[Msg]) -> int:
        """Evaluate the images where ``seq`` stands; where its text run ends, -1 if it failed."""
        try:
            return media.feed(self._engine, seq)
        except EngineError as exc:
            self._fail(seq, ErrorCode.INTERNAL, str(exc), out)
            return -1

    def _make_room(self, seq: Seq, out: list[Msg]) -> bool:
        if not seq.req.shift:
            self._finish(seq, "length", out)
            return False
        cached = seq.slot.cached
        keep = max(0, min(seq.req.num_keep, len(cached) - 2))
        discard = (len(cached) - keep) // 2
        try:
            self._engine.shift(seq.slot.index, keep, discard)
        except EngineError as exc:
            self._fail(seq, ErrorCode.INTERNAL, str(exc), out)
            return False
        del cached[keep : keep + discard]
        return True

    def _decode(self, chunks: list[Chunk], owners: list[Seq | None], out: list[Msg]) -> None:
        try:
            self._engine.decode(chunks)
        except EngineError as exc:
            log.error("decode failed: %s", exc)
            for chunk in chunks:
                seq = self.slots[chunk.seq].seq
                if seq is not None:
                    self._fail(seq, ErrorCode.INTERNAL, str(exc), out)
            return
        slots = self.slots
        for chunk in chunks:
            slot = slots[chunk.seq]
            slot.cached.extend(chunk.tokens)
            if slot.seq is not None:
                slot.seq.pending = -1
        row = -1
        for chunk, seq in zip(chunks, owners, strict=True):
            row += len(chunk.tokens)
            if seq is not None and seq.slot.seq is seq:
                self._sampled(seq, row, out)

    def _sampled(self, seq: Seq, row: int, out: list[Msg]) -> None:
        engine = self._engine
        sampled = seq.sampler.sample(row)
        token = sampled.token
        if not seq.prompt_s:
            seq.prompt_s = time.perf_counter() - seq.started
        if engine.is_eog(token):
            self._finish(seq, "stop", out)
            return
        seq.count += 1
        seq.pending = token
        seq.ids.append(token)
        if sampled.logprob is not None:
            seq.probs.append(sampled.logprob)
        text = seq.text.feed(engine.piece(token))
        if text:
            out.append(
                Tokens(
                    id=seq.req.id,
                    text=text,
                    ids=tuple(seq.ids),
                    logprobs=tuple(seq.probs),
                    first=seq.first,
                )
            )
            seq.first = False
            seq.ids, seq.probs = [], []
        if seq.text.stopped:
            self._finish(seq, "stop", out)
        elif 0 < seq.req.num_predict <= seq.count:
            self._finish(seq, "length", out)

    # ------------------------------------------------------------------ endings

    def _finish(self, seq: Seq, reason: str, out: list[Msg]) -> None:
        tail = "" if reason == "cancel" else seq.text.flush()
        req_id = seq.req.id
        if tail or seq.ids:
            out.append(
                Tokens(
                    id=req_id,
                    text=tail,
                    ids=tuple(seq.ids),
                    logprobs=tuple(seq.probs),
                    first=seq.first,
                )
            )
        context = seq.slot.cached
        if seq.pending >= 0:
            context = [*context, seq.pending]  # sampled, never decoded
        cached = min(seq.prompt_cached, len(seq.prompt))
        if not seq.prompt_s:
            seq.prompt_s = time.perf_counter() - seq.started
        stats = Stats(
            prompt_tokens=len(seq.prompt),
            prompt_cached=cached,
            prompt_eval_s=seq.prompt_s,
            eval_tokens=seq.count,
            eval_s=max(0.0, time.perf_counter() - seq.started - seq.prompt_s),
        )
        done = Done(
            id=req_id,
            reason=reason,  # type: ignore[arg-type]
            stats=stats,
            context=tuple(context),
            stop=seq.text.matched,
        )
        out.append(done)
        self._release(seq)

    def _fail(self, seq: Seq, code: ErrorCode, message: str, out: list[Msg]) -> None:
        out.append(Failed(id=seq.req.id, code=code, message=message))
        self._release(seq)
        self.truncate(seq.slot, 0)  # its cache may be half-written: start it afresh

    def _release(self, seq: Seq) -> None:
        seq.sampler.close()
        seq.slot.seq = None
        self.active.remove(seq)

    def _release_embed(self, job: EmbedJob) -> None:
        job.slot.embedding = False
        self._embeds.remove(job)

    def cancel(self, ids: Iterable[int]) -> None:
        wanted = set(ids)
        out: list[Msg] = []
        for seq in [s for s in self.active if s.req.id in wanted]:
            self._finish(seq, "cancel", out)
        for job in [j for j in self.embeds if j.req.id in wanted]:
            self._release_embed(job)
            out.append(Done(id=job.req.id, reason="cancel", stats=job.stats()))
        if out:
            self._emit(out)

    def cancel_all(self) -> None:
        self.cancel([s.req.id for s in self.active] + [j.req.id for j in self.embeds])

    def fail_all(self, message: str) -> None:
        out: list[Msg] = []
        for seq in list(self.active):
            self._fail(seq, ErrorCode.INTERNAL, message, out)
        for job in list(self.embeds):
            self._release_embed(job)
            out.append(Failed(id=job.req.id, code=ErrorCode.INTERNAL, message=message))
        self._emit(out)
