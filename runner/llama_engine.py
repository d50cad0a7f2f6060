"""``Engine`` over llama-cpp-python's low-level API: one model, one context, many sequences.

The context holds ``num_parallel`` sequences, each with its own KV stream of ``n_ctx`` cells
(``kv_unified`` off: a sequence attends only to its own cache; with a unified cache, greedy
output in a batch sometimes drifted from a lone run's). ``decode``
fills one ``llama_batch`` with every chunk of a step (per-token sequence ids) and makes one
``llama_decode`` call; logits are requested only for the rows that will be sampled. Embeddings
borrow a free sequence, switch the context to embeddings for their own decodes only (a chunk of
a text per scheduler step), and leave the sequence empty, so no reload is needed and no other
sequence's cache is touched. A model with a projector (``LoadParams.projector_path``) takes
images through ``runner.vision``. A load reports progress through llama.cpp's progress callback
(after every tensor it reads) and once more after each later step; what it placed on GPUs is
read from llama.cpp's log (``runner.placement``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import llama_cpp
import numpy as np
import psutil
from llama_cpp import _internals
from llama_cpp import _logger as llama_logger

from proto import Generate, LoadParams, Memory
from runner.engine import (
    BadRequestError,
    Chunk,
    EngineError,
    LoadInfo,
    Media,
    OnProgress,
    PromptTooLongError,
    Span,
)
from runner.llama_compat import set_fields
from runner.llama_params import context_params, enter_cpu_mode, model_params
from runner.native_log import llama_log
from runner.placement import gpu_buffer_types
from runner.sampling import LlamaSampler

if TYPE_CHECKING:
    from runner.vision import Projector

__all__ = ["LlamaEngine"]

log = logging.getLogger(__name__)

_EMBED_CHUNK = 64  # tokens per embedding decode: every one has an output row (and logits)

Vector = np.ndarray[Any, Any]


class LlamaEngine:
    def __init__(self, *, verbose: bool = False) -> None:
        llama_logger.set_verbose(verbose)
        self._log = llama_log()
        self._model: Any = None
        self._ctx: Any = None  # the raw llama_context pointer
        self._owner: Any = None  # the _internals.LlamaContext that frees it
        self._batch: Any = None
        self._n_batch = 512
        self._n_ctx = 0
        self._n_vocab = 0
        self._embedding = False
        self._params_refs: list[object] = []  # what the model's params point at
        self._vision: Projector | None = None
        self._vram = 0

    # ------------------------------------------------------------------ lifecycle

    def load(self, params: LoadParams, progress: OnProgress) -> LoadInfo:
        llama_cpp.llama_backend_init()
        with self._log.placement() as placed:
            info = self._load(params, progress)
        self._vram = placed.bytes_on(gpu_buffer_types())
        log.info(
            "model placed: %s; on GPUs: %d layers, %.1f MiB",
            placed.describe(),
            placed.gpu_layers,
            self._vram / (1 << 20),
        )
        return dataclasses.replace(info, gpu_layers=placed.gpu_layers)

    def _load(self, params: LoadParams, progress: OnProgress) -> LoadInfo:
        cpu_mode = enter_cpu_mode(params.cpu_mode)
        mparams, self._params_refs = model_params(params, cpu_mode, progress)
        try:
            self._model = _internals.LlamaModel(
                path_model=params.model_path, params=mparams, verbose=True
            )
        except ValueError as exc:
            raise EngineError(str(exc)) from exc
        n_ctx_train = self._model.n_ctx_train()
        n_ctx = params.n_ctx if n_ctx_train <= 0 else min(params.n_ctx, n_ctx_train)
        n_ctx = max(n_ctx, 4)
        n_par = max(1, params.num_parallel)
        n_batch = max(params.n_batch, n_par)
        threads = params.n_threads or (psutil.cpu_count(logical=False) or os.cpu_count() or 1)
        cparams = context_params(params, n_ctx=n_ctx, n_par=n_par, n_batch=n_batch, threads=threads)
        try:
            self._owner = _internals.LlamaContext(model=self._model, params=cparams, verbose=True)
        except ValueError as exc:
            raise EngineError(f"{exc} (n_ctx={cparams.n_ctx})") from exc
        self._ctx = self._owner.ctx
        _go_on(progress)
        self._apply_loras(params.lora_paths)
        if params.projector_path:
            _go_on(progress)
            from runner.vision import Projector  # loads libmtmd: only for models with images

            self._vision = Projector(
                params.projector_path,
                self._model.model,
                n_threads=threads,
                use_gpu=params.n_gpu_layers != 0,
                flash_attn=cparams.flash_attn_type,
            )
        self._n_batch = n_batch
        self._n_ctx = min(n_ctx, llama_cpp.llama_n_ctx_seq(self._ctx))
        self._n_vocab = self._model.n_vocab()
        self._embedding = params.embedding
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        set_fields(self._batch, n_tokens=0)  # (checked once: `_decode` writes it every step)
        return LoadInfo(
            n_ctx=self._n_ctx,
            n_vocab=self._n_vocab,
            num_parallel=n_par,
            n_batch=n_batch,
            cpu_mode=cpu_mode,
        )

    def _apply_loras(self, paths: Sequence[str]) -> None:
        """Load every adapter, then set them all at once (a set replaces the previous one)."""
        if not paths:
            return
        loaded = []
        for path in paths:
            self._log.take()
            adapter = llama_cpp.llama_adapter_lora_init(self._model.model, path.encode())
            if not adapter:
                why = self._log.take() or "see the runner's log"
                raise EngineError(f"failed to load LoRA adapter {path}: {why}")
            loaded.append(adapter)
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * len(loaded))(*loaded)
        scales = (ctypes.c_float * len(loaded))(*[1.0] * len(loaded))
        if llama_cpp.llama_set_adapters_lora(self._ctx, adapters, len(loaded), scales) != 0:
            raise EngineError(f"failed to apply LoRA adapters {', '.join(paths)}")

    def close(self) -> None:
        if self._vision is not None:
            self._vision.close()
            self._vision = None
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._owner is not None:
            self._owner.close()
            self._owner = self._ctx = None
        if self._model is not None:
            self._model.close()
            self._model = None

    def about(self) -> tuple[str, str]:
        info = llama_cpp.llama_print_system_info().decode(errors="replace")
        return f"llama-cpp-python {llama_cpp.__version__}", " ".join(info.split())

    def memory(self) -> Memory:
        return Memory(rss=psutil.Process().memory_info().rss, vram=self._vram)

    # ------------------------------------------------------------------ vocabulary

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        tokens: list[int] = self._model.tokenize(text.encode(), add_special, parse_special)
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._model.vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._model.vocab, token, buf, -n, 0, False)
        return buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._model.vocab, token))

    # ------------------------------------------------------------------ batches and sequences

    def sampler(self, req: Generate, prompt: Sequence[int]) -> LlamaSampler:
        return LlamaSampler(
            model=self._model,
            ctx=self._ctx,
            req=req,
            n_ctx=self._n_ctx,
            n_vocab=self._n_vocab,
            piece=self.piece,
        )

    def decode(self, chunks: Sequence[Chunk]) -> None:
        self._decode(chunks, every_row=False)

    def _decode(self, chunks: Sequence[Chunk], *, every_row: bool) -> None:
        batch = self._batch
        flag = int(every_row)
        token, pos, n_seq, seq_id, logits = (
            batch.token,
            batch.pos,
            batch.n_seq_id,
            batch.seq_id,
            batch.logits,
        )
        i = 0
        for chunk in chunks:
            seq = chunk.seq
            p = chunk.pos
            for t in chunk.tokens:
                token[i] = t
                pos[i] = p
                n_seq[i] = 1
                seq_id[i][0] = seq
                logits[i] = flag
                i += 1
                p += 1
            if chunk.logits:
                logits[i - 1] = 1
        batch.n_tokens = i
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            raise EngineError(f"llama_decode failed with status {rc}")

    def media_prompt(
        self, text: str, images: Sequence[bytes], *, add_special: bool
    ) -> tuple[list[int], list[Span]]:
        if self._vision is None:
            raise BadRequestError("this model does not support images (it has no projector)")
        return self._vision.prompt(text, images, add_special=add_special, tokenize=self.tokenize)

    def decode_media(self, seq: int, media: Media, pos: int) -> None:
        if self._vision is None:
            raise EngineError("this model has no projector")
        self._vision.decode(self._ctx, media, seq, pos, self._n_batch)

    def forget(self, seq: int, start: int) -> bool:
        mem = llama_cpp.llama_get_memory(self._ctx)
        return bool(llama_cpp.llama_memory_seq_rm(mem, seq, start, -1))

    def shift(self, seq: int, keep: int, discard: int) -> None:
        mem = llama_cpp.llama_get_memory(self._ctx)
        if not llama_cpp.llama_memory_can_shift(mem):
            raise EngineError("the context is full and this model cannot shift it")
        llama_cpp.llama_memory_seq_rm(mem, seq, keep, keep + discard)
        llama_cpp.llama_memory_seq_add(mem, seq, keep + discard, -1, -discard)

    # ------------------------------------------------------------------ embeddings

    def embedding(
        self, seq: int, text: str, *, n_ctx: int, truncate: bool, normalize: bool
    ) -> _Embedding:
        pooled = llama_cpp.llama_pooling_type(self._ctx) != llama_cpp.LLAMA_POOLING_TYPE_NONE
        n_ctx = min(n_ctx, self._n_ctx)
        limit = min(n_ctx, self._n_batch) if pooled else n_ctx
        tokens = self.tokenize(text, add_special=True, parse_special=False)
        if len(tokens) > limit:
            if not truncate:
                raise PromptTooLongError("the input length exceeds the context length")
            tokens = tokens[:limit]
        self.forget(seq, 0)
        return _Embedding(self, seq, tokens, pooled=pooled, normalize=normalize)

    def _embed_chunk(self, seq: int, tokens: list[int], pos: int, pooled: bool) -> Vector:
        """Decode ``tokens`` into ``seq`` for their embeddings: the sequence's pooled vector,
        else the sum of the tokens' rows. Embeddings are on for this decode only."""
        n_embd = self._model.n_embd()
        llama_cpp.llama_set_embeddings(self._ctx, True)
        try:
            self._decode([Chunk(seq, tokens, pos, True)], every_row=True)
            if pooled:
                ptr = llama_cpp.llama_get_embeddings_seq(self._ctx, seq)
                if not ptr:
                    raise EngineError("the model returned no pooled embedding")
                return np.ctypeslib.as_array(ptr, shape=(n_embd,)).astype(np.float64)
            ptr = llama_cpp.llama_get_embeddings(self._ctx)
            if not ptr:
                raise EngineError("the model returned no embeddings")
            rows = np.ctypeslib.as_array(ptr, shape=(len(tokens), n_embd))
            total: Vector = rows.sum(axis=0, dtype=np.float64)
            return total
        finally:
            llama_cpp.llama_set_embeddings(self._ctx, self._embedding)


def _go_on(progress: OnProgress) -> None:
    """Report a step of the load done; ``EngineError`` when the runner is stopping."""
    if not progress(1.0):
        raise EngineError("the load was abandoned: the runner is stopping")


class _Embedding:
    """A text's embedding in progress: a pooled model takes it in one decode, any other in
    chunks of ``_EMBED_CHUNK`` tokens whose rows are averaged."""

    def __init__(
        self, engine: LlamaEngine, seq: int, tokens: list[int], *, pooled: bool, normalize: bool
    ) -> None:
        self._engine = engine
        self._seq = seq
        self._tokens = tokens
        self._pooled = pooled
        self._normalize = normalize
        self._pos = 0
        self._total: Vector = np.zeros(engine._model.n_embd(), dtype=np.float64)
        self._closed = False

    @property
    def n_tokens(self) -> int:
        return len(self._tokens)

    def advance(self) -> list[float] | None:
        tokens = self._tokens
        if not tokens:
            return self._finish(self._total)
        step = len(tokens) if self._pooled else _EMBED_CHUNK
        part = tokens[self._pos : self._pos + step]
        vec = self._engine._embed_chunk(self._seq, part, self._pos, self._pooled)
        if self._pooled:
            return self._finish(vec)
        self._total += vec
        self._pos += len(part)
        if self._pos < len(tokens):
            return None
        return self._finish(self._total / len(tokens))

    def _finish(self, vec: Vector) -> list[float]:
        if self._normalize:
            norm = float(np.linalg.norm(vec))
            if norm > 0:
                vec = vec / norm
        self.close()
        out: list[float] = vec.tolist()
        return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._engine.forget(self._seq, 0)
