"""An ``Embed`` request as work the scheduler advances one chunk (one decode) per step.

The job holds a slot from admission to its end, embeds its inputs in order, one text at a time
in that slot's sequence, and sends the vectors as they pile up (``FRAME_VECTORS`` or
``FRAME_FLOATS`` to a frame), then ``Done``. Between two chunks the other sequences take their
generation step and a ``Cancel`` ends the job, so a batch of thousands of inputs neither stalls
other clients' streams nor outlives a client that went away.
"""

from __future__ import annotations

import time

from proto import Done, Embed, Embeddings, Msg, Stats
from runner.engine import EmbedRun, Engine
from runner.slots import Slot

__all__ = ["FRAME_FLOATS", "FRAME_VECTORS", "EmbedJob"]

FRAME_VECTORS = 64  # vectors sent together at most...
FRAME_FLOATS = 1 << 16  # ...and floats (about 600 kB of msgpack), so no frame nears MAX_FRAME


class EmbedJob:
    """``req`` (one input at least) in ``slot``, from admission to its ``Done``."""

    def __init__(self, req: Embed, slot: Slot, n_ctx: int) -> None:
        self.req = req
        self.slot = slot
        self.n_ctx = n_ctx  # the request's context (at most the runner's)
        self.started = time.perf_counter()
        self._next = 0  # the input being embedded (or next to be)
        self._run: EmbedRun | None = None
        self._tokens = 0  # of the inputs started so far
        self._ready: list[tuple[float, ...]] = []  # vectors not sent yet
        self._ready_floats = 0
        self._ready_tokens = 0

    def advance(self, engine: Engine) -> list[Msg]:
        """Evaluate the next chunk; the messages ready to send, the last ones ending in ``Done``.
        Raises what ``engine`` raises (``BadRequestError`` for an input too long to embed)."""
        req = self.req
        run = self._run
        if run is None:
            text = req.inputs[self._next]
            run = engine.embedding(
                self.slot.index, text, n_ctx=self.n_ctx, truncate=req.truncate,
                normalize=req.normalize,
            )  # fmt: skip
            self._run = run
            self._tokens += run.n_tokens
        vector = run.advance()
        if vector is None:
            return []
        self._run = None
        self._next += 1
        self._ready.append(tuple(vector))
        self._ready_floats += len(vector)
        self._ready_tokens += run.n_tokens
        last = self._next == len(req.inputs)
        out: list[Msg] = []
        if last or len(self._ready) >= FRAME_VECTORS or self._ready_floats >= FRAME_FLOATS:
            out.append(self._flush())
        if last:
            out.append(Done(id=req.id, reason="stop", stats=self.stats()))
        return out

    def _flush(self) -> Embeddings:
        msg = Embeddings(
            id=self.req.id, vectors=tuple(self._ready), prompt_tokens=self._ready_tokens
        )
        self._ready, self._ready_floats, self._ready_tokens = [], 0, 0
        return msg

    def stats(self) -> Stats:
        return Stats(prompt_tokens=self._tokens, prompt_eval_s=time.perf_counter() - self.started)

    def close(self) -> None:
        """Stop where it is: the sequence is left empty."""
        if self._run is not None:
            self._run.close()
            self._run = None
