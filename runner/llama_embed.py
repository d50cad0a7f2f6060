"""A second llama.cpp context on the loaded model, for embedding many texts per decode.

The generation context cannot pack texts: it has one KV stream per slot, and llama.cpp splits
a batch over several streams into ubatches of equal length per sequence, so texts of unequal
length would take many graph computes, and a pooled vector is only right for a sequence that
sits in one ubatch. This context has one unified KV cache, ``EMBED_SEQS`` sequences, embeddings
on, and a ubatch as large as its batch, so a decode of many short texts is one graph compute
and each text's vector is pooled by llama.cpp (``llama_get_embeddings_seq``). A model without a
pooling of its own (a chat model) is pooled by mean, which is the mean of its tokens' rows the
runner always returned for it; a text longer than a decode then goes in parts whose means are
weighted by their lengths. A model that pools (an embedding model) keeps its pooling, and a
text must fit one decode, as llama-server asks.

It is made at the first embedding, not at the load, so a runner that only generates pays
nothing for it; it holds ``max(n_ctx, n_batch)`` cells, the longest text and one decode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import _internals

from runner.engine import EmbedPart, EngineError
from runner.llama_compat import fill_batch, set_fields

__all__ = ["EMBED_SEQS", "EmbedContext"]

EMBED_SEQS = 64  # texts in one decode at most: ~8 tokens each fill a 512-token batch

Vector = np.ndarray[Any, Any]


class EmbedContext:
    def __init__(self, model: Any, cparams: Any, *, n_batch: int, pooling: int) -> None:
        """``cparams``: the generation context's parameters, changed here into this one's
        (``pooling``: the generation context's, i.e. the model's)."""
        self.chunked = pooling == llama_cpp.LLAMA_POOLING_TYPE_NONE
        set_fields(
            cparams,
            n_batch=n_batch,
            n_ubatch=n_batch,
            n_seq_max=EMBED_SEQS,
            kv_unified=True,
            embeddings=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN if self.chunked else pooling,
        )
        try:
            self._owner: Any = _internals.LlamaContext(model=model, params=cparams, verbose=True)
        except ValueError as exc:
            raise EngineError(f"cannot make the embedding context: {exc}") from exc
        self._ctx = self._owner.ctx
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._n_embd = int(model.n_embd())
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._partial: dict[int, Vector] = {}  # a text in parts: the sum of its rows so far

    def embed(self, parts: Sequence[EmbedPart]) -> list[list[float] | None]:
        batch = self._batch
        i = fill_batch(batch, parts, every_row=True)
        if i:
            rc = llama_cpp.llama_decode(self._ctx, batch)
            if rc != 0:
                self._clear()
                raise EngineError(f"llama_decode failed with status {rc} (embeddings)")
        out: list[list[float] | None] = []
        for part in parts:
            total = self._partial.pop(part.seq, None)
            if part.tokens:
                vec = self._pooled(part.seq)
                if self.chunked:
                    vec = vec * len(part.tokens)  # a sum of rows, over the whole text below
                total = vec if total is None else total + vec
            if not part.last:
                self._partial[part.seq] = total if total is not None else self._zeros()
                out.append(None)
                continue
            if total is None:
                total = self._zeros()
            elif self.chunked:
                total = total / (part.pos + len(part.tokens))
            out.append(total.tolist())
            self.forget(part.seq)
        return out

    def _pooled(self, seq: int) -> Vector:
        ptr = llama_cpp.llama_get_embeddings_seq(self._ctx, seq)
        if not ptr:
            raise EngineError("the model returned no pooled embedding")
        return np.ctypeslib.as_array(ptr, shape=(self._n_embd,)).astype(np.float64)

    def _zeros(self) -> Vector:
        return np.zeros(self._n_embd, dtype=np.float64)

    def forget(self, seq: int) -> None:
        self._partial.pop(seq, None)
        llama_cpp.llama_memory_seq_rm(self._mem, seq, 0, -1)

    def _clear(self) -> None:
        self._partial.clear()
        llama_cpp.llama_memory_clear(self._mem, True)

    def close(self) -> None:
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        self._owner.close()
