"""``Engine`` over llama-cpp-python's low-level API: one model, one context, many sequences.

The context holds ``num_parallel`` sequences, each with its own KV stream of ``n_ctx`` cells
(``kv_unified`` off: a sequence attends only to its own cache; with a unified cache, greedy
output in a batch sometimes drifted from a lone run's). ``decode``
fills one ``llama_batch`` with every chunk of a step (per-token sequence ids) and makes one
``llama_decode`` call; logits are requested only for the rows that will be sampled. Embeddings
go to a second context on the same weights (``runner.llama_embed``), made at the first one, that
packs many texts per decode; no reload is needed and no slot's cache is touched. An embedding
model (``LoadParams.embedding``) has that context from its load, and a generation context of
``EMBEDDING_MODEL_GEN_CTX`` cells per sequence: a full one would only hold memory, since the
gateway never asks it for generation. Its batch holds a whole context: llama.cpp pools a text only
within one ubatch, so a text of up to ``n_ctx`` tokens must fit one decode (llama.cpp's embedding
example and llama-server size it so); a smaller batch cut every text at ``num_batch`` tokens.
A model with a projector (``LoadParams.projector_path``)
takes images through ``runner.vision``. A mapped file the page cache lacks is read ahead on a
thread while it loads (``runner.prefetch``). A load reports progress through llama.cpp's
progress callback (after every tensor it reads) and once more after each later step; what it
placed on GPUs is read from llama.cpp's log (``runner.placement``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import llama_cpp
import psutil
from llama_cpp import _internals
from llama_cpp import _logger as llama_logger

from proto import Generate, LoadParams, Memory
from runner.engine import (
    BadRequestError,
    Chunk,
    EmbedPart,
    EngineError,
    LoadInfo,
    Media,
    OnProgress,
    PromptTooLongError,
    Span,
)
from runner.llama_compat import fill_batch, set_fields
from runner.llama_embed import EMBED_SEQS, EmbedContext
from runner.llama_params import context_params, enter_cpu_mode, model_params
from runner.native_log import llama_log
from runner.placement import gpu_buffer_types
from runner.prefetch import Prefetcher
from runner.sampling import LlamaSampler

if TYPE_CHECKING:
    from runner.vision import Projector

__all__ = ["EMBEDDING_MODEL_GEN_CTX", "LlamaEngine"]

log = logging.getLogger(__name__)

# An embedding model's generation context: cells per sequence (power.supervisor.memory's
# estimate counts the same)
EMBEDDING_MODEL_GEN_CTX = 256

# Characters of a text tokenized first, per token a context holds, when an embedding may be cut
# there: few tokens are longer. A text still short of the limit is tokenized again from four
# times as many characters, up to all of them, so an 8 MiB text cut to a context of tokens costs
# a prefix's tokenizing, not seconds.
_CHARS_PER_TOKEN = 8
# Tokens past the limit a prefix must give to stand for the whole text: a word cut in two at its
# end may give a few tokens more than the whole word
_CUT_SLACK = 16


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
        self._embed_params: tuple[LoadParams, int] | None = None  # (params, threads) from the load
        self._embed_ctx: EmbedContext | None = None  # made at the first embedding
        self._params_refs: list[object] = []  # what the model's params point at
        self._vision: Projector | None = None
        self._vram = 0
        self._prefetch: Prefetcher | None = None

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
        if params.use_mmap:  # (without it llama.cpp reads the file itself, front to back)
            self._prefetch = Prefetcher([params.model_path, params.projector_path])
            self._prefetch.start()
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
        # llama.cpp never batches more tokens than a causal context holds, and an embedding
        # model's text fits its context; the batch's arrays are allocated for n_batch tokens
        # (below), so a num_batch of 2**31 would otherwise fail that allocation and crash here
        n_batch = min(max(params.n_batch, n_par), n_ctx * n_par)
        threads = params.n_threads or (psutil.cpu_count(logical=False) or os.cpu_count() or 1)
        gen_ctx, gen_batch = n_ctx, n_batch
        if params.embedding:  # it only embeds (the gateway refuses it generation), in the
            # embedding context made below: the generation context is kept small, and a decode
            # of the embedding context holds a whole context's text
            gen_ctx = min(n_ctx, EMBEDDING_MODEL_GEN_CTX)
            gen_batch = min(n_batch, gen_ctx)
            n_batch = max(n_batch, n_ctx)
        cparams = context_params(
            params, n_ctx=gen_ctx, n_par=n_par, n_batch=gen_batch, threads=threads
        )
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
        # what a sequence may hold (an embedding model's texts: in the embedding context)
        seq_cells = llama_cpp.llama_n_ctx_seq(self._ctx)
        self._n_ctx = n_ctx if params.embedding else min(n_ctx, seq_cells)
        self._n_vocab = self._model.n_vocab()
        self._embed_params = (params, threads)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        set_fields(self._batch, n_tokens=0)  # (checked once: `_decode` writes it every step)
        if params.embedding:
            _go_on(progress)
            self._embedding_context()
        return LoadInfo(
            n_ctx=self._n_ctx,
            n_vocab=self._n_vocab,
            num_parallel=n_par,
            n_batch=n_batch,
            cpu_mode=cpu_mode,
            embed_seqs=EMBED_SEQS,
            copies_prefix=n_par > 1 and _plain_kv_cache(self._model.model),
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
        if self._prefetch is not None:
            self._prefetch.stop()
            self._prefetch = None
        if self._embed_ctx is not None:
            self._embed_ctx.close()
            self._embed_ctx = None
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
        fill_batch(batch, chunks, every_row=every_row)
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            raise EngineError(f"llama_decode failed with status {rc}")

    def media_prompt(
        self, text: str, images: Sequence[bytes], *, add_special: bool, limit: int = 0
    ) -> tuple[list[int], list[Span]]:
        if self._vision is None:
            raise BadRequestError("this model does not support images (it has no projector)")
        return self._vision.prompt(
            text, images, add_special=add_special, tokenize=self.tokenize, limit=limit
        )

    def decode_media(self, seq: int, media: Media, pos: int) -> None:
        if self._vision is None:
            raise EngineError("this model has no projector")
        self._vision.decode(self._ctx, media, seq, pos, self._n_batch)

    def forget(self, seq: int, start: int) -> bool:
        mem = llama_cpp.llama_get_memory(self._ctx)
        return bool(llama_cpp.llama_memory_seq_rm(mem, seq, start, -1))

    def copy_prefix(self, src: int, dst: int, n: int) -> bool:
        mem = llama_cpp.llama_get_memory(self._ctx)
        llama_cpp.llama_memory_seq_rm(mem, dst, 0, -1)
        # one KV stream per sequence: llama.cpp copies src's whole stream at the next decode,
        # before it computes, and dst's cells beyond the prefix are dropped here
        llama_cpp.llama_memory_seq_cp(mem, src, dst, -1, -1)
        if llama_cpp.llama_memory_seq_rm(mem, dst, n, -1):
            return True
        llama_cpp.llama_memory_seq_rm(mem, dst, 0, -1)
        return False

    def shift(self, seq: int, keep: int, discard: int) -> None:
        mem = llama_cpp.llama_get_memory(self._ctx)
        if not llama_cpp.llama_memory_can_shift(mem):
            raise EngineError("the context is full and this model cannot shift it")
        llama_cpp.llama_memory_seq_rm(mem, seq, keep, keep + discard)
        llama_cpp.llama_memory_seq_add(mem, seq, keep + discard, -1, -discard)

    # ------------------------------------------------------------------ embeddings

    def embed_tokens(self, text: str, *, n_ctx: int, truncate: bool) -> list[int]:
        pooled = llama_cpp.llama_pooling_type(self._ctx) != llama_cpp.LLAMA_POOLING_TYPE_NONE
        n_ctx = min(n_ctx, self._n_ctx)
        limit = min(n_ctx, self._n_batch) if pooled else n_ctx  # a pooled text fits a decode
        size = limit * _CHARS_PER_TOKEN
        while True:
            head = text[:size]
            tokens = self.tokenize(head, add_special=True, parse_special=False)
            if len(head) == len(text) or len(tokens) > limit + _CUT_SLACK:
                break
            size *= 4
        if len(tokens) > limit:
            if not truncate:
                raise PromptTooLongError("the input length exceeds the context length")
            tokens = tokens[:limit]
        return tokens

    def embed(self, parts: Sequence[EmbedPart]) -> list[list[float] | None]:
        return self._embedding_context().embed(parts)

    def _embedding_context(self) -> EmbedContext:
        """The embedding context: made at the load for an embedding model, else at the first
        embedding."""
        ctx = self._embed_ctx
        if ctx is None:
            assert self._embed_params is not None  # (loaded)
            params, threads = self._embed_params
            n_cells = max(self._n_ctx, self._n_batch)  # the longest text, or one decode
            cparams = context_params(
                params, n_ctx=n_cells, n_par=1, n_batch=self._n_batch, threads=threads
            )
            pooling = int(llama_cpp.llama_pooling_type(self._ctx))
            ctx = EmbedContext(self._model, cparams, n_batch=self._n_batch, pooling=pooling)
            self._embed_ctx = ctx
        return ctx

    def embed_forget(self, seq: int) -> None:
        if self._embed_ctx is not None:
            self._embed_ctx.forget(seq)


def _plain_kv_cache(model: Any) -> bool:
    """Whether the model's memory is one plain KV cache, whose sequences copy and cut at any
    position (not a recurrent or hybrid model's state, nor a sliding window's cache)."""
    return not (
        llama_cpp.llama_model_is_recurrent(model)
        or llama_cpp.llama_model_is_hybrid(model)
        or llama_cpp.llama_model_n_swa(model) > 0
    )


def _go_on(progress: OnProgress) -> None:
    """Report a step of the load done; ``EngineError`` when the runner is stopping."""
    if not progress(1.0):
        raise EngineError("the load was abandoned: the runner is stopping")
