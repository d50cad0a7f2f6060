"""``Engine`` over llama-cpp-python's low-level API: one model, one persistent context.

The decode loop is ours (one ``llama_batch`` per step, llama.cpp's sampler chain), so nothing
per token goes through llama-cpp-python's high-level ``Llama`` machinery, logits are only read
where sampling or logprobs need them, and the KV cache of sequence 0 is kept between requests:
a new prompt re-evaluates only what differs from the previous one.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import time
from collections.abc import Generator, Sequence
from typing import Any

import llama_cpp
import numpy as np
import psutil
from llama_cpp import _internals
from llama_cpp import _logger as llama_logger

from proto import Generate, LoadParams, Memory, Sampling, TokenLogprob, TopLogprob
from runner.engine import EngineError, GenStats, LoadInfo, PromptTooLongError, Sampled

__all__ = ["LlamaEngine"]

log = logging.getLogger(__name__)

_KV_TYPES = {
    "f32": 0,
    "f16": llama_cpp.GGML_TYPE_F16,
    "bf16": 30,
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
    "q4_0": llama_cpp.GGML_TYPE_Q4_0,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
}
_SEQ = 0  # the one sequence this engine serves


class LlamaEngine:
    def __init__(self, *, verbose: bool = False) -> None:
        llama_logger.set_verbose(verbose)
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._n_batch = 512
        self._n_ctx = 0
        self._n_vocab = 0
        self._cached: list[int] = []  # tokens whose KV is in sequence 0, in position order

    # ------------------------------------------------------------------ lifecycle

    def load(self, params: LoadParams) -> LoadInfo:
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = params.n_gpu_layers
        mparams.main_gpu = params.main_gpu
        mparams.use_mmap = params.use_mmap
        mparams.use_mlock = params.use_mlock
        try:
            self._model = _internals.LlamaModel(
                path_model=params.model_path, params=mparams, verbose=True
            )
        except ValueError as exc:
            raise EngineError(str(exc)) from exc
        n_ctx_train = self._model.n_ctx_train()
        n_ctx = params.n_ctx if n_ctx_train <= 0 else min(params.n_ctx, n_ctx_train)
        n_ctx = max(n_ctx, 4)
        threads = params.n_threads or (psutil.cpu_count(logical=False) or os.cpu_count() or 1)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx * params.num_parallel
        cparams.n_batch = params.n_batch
        cparams.n_ubatch = params.n_batch
        cparams.n_seq_max = params.num_parallel
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.embeddings = params.embedding
        cparams.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
            if params.flash_attn is None
            else int(params.flash_attn)
        )
        kv_type = _KV_TYPES.get(params.kv_cache_type.lower())
        if kv_type is None:
            raise EngineError(f"unsupported KV cache type {params.kv_cache_type!r}")
        cparams.type_k = kv_type
        cparams.type_v = kv_type
        try:
            self._ctx = _internals.LlamaContext(model=self._model, params=cparams, verbose=True)
        except ValueError as exc:
            raise EngineError(f"{exc} (n_ctx={cparams.n_ctx})") from exc
        for path in params.lora_paths:
            self._apply_lora(path)
        self._n_batch = params.n_batch
        self._n_ctx = n_ctx
        self._n_vocab = self._model.n_vocab()
        self._batch = llama_cpp.llama_batch_init(params.n_batch, 0, params.num_parallel)
        return LoadInfo(
            n_ctx=n_ctx,
            n_ctx_train=n_ctx_train,
            n_vocab=self._n_vocab,
            num_parallel=params.num_parallel,
            gpu_layers=params.n_gpu_layers,
        )

    def _apply_lora(self, path: str) -> None:
        adapter = llama_cpp.llama_adapter_lora_init(self._model.model, path.encode())
        if not adapter:
            raise EngineError(f"failed to load LoRA adapter {path}")
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
        scales = (ctypes.c_float * 1)(1.0)
        if llama_cpp.llama_set_adapters_lora(self._ctx.ctx, adapters, 1, scales) != 0:
            raise EngineError(f"failed to apply LoRA adapter {path}")

    def close(self) -> None:
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        if self._model is not None:
            self._model.close()
            self._model = None

    def memory(self) -> Memory:
        return Memory(rss=psutil.Process().memory_info().rss, vram=0)

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

    # ------------------------------------------------------------------ generation

    def generate(
        self, req: Generate, prompt: list[int], stats: GenStats
    ) -> Generator[Sampled, None, None]:
        prompt = self._fit(prompt, req)
        started = time.perf_counter()
        reused = self._evaluate_prompt(prompt)
        stats.prompt_tokens = len(prompt)
        stats.prompt_cached = reused
        stats.prompt_eval_s = time.perf_counter() - started
        sampler = self._sampler(req.sampling, req.grammar, req.num_keep)
        cached = self._cached
        try:
            while True:
                token = llama_cpp.llama_sampler_sample(sampler, self._ctx.ctx, -1)
                logprob = self._logprob(token, req.logprobs) if req.logprobs >= 0 else None
                yield Sampled(token, logprob)
                if len(cached) >= self._n_ctx:
                    if not req.shift:
                        stats.context_full = True
                        return
                    self._shift(req.num_keep)
                self._decode([token], len(cached), logits_last=True)
                cached.append(token)
        finally:
            llama_cpp.llama_sampler_free(sampler)
            stats.context = list(cached)

    def _fit(self, prompt: list[int], req: Generate) -> list[int]:
        limit = self._n_ctx - 1
        if len(prompt) <= limit:
            return prompt
        if not (req.truncate and req.shift):
            raise PromptTooLongError(
                "the prompt is longer than the context length currently available to the model;"
                f" prompt {len(prompt)} tokens, context {self._n_ctx} tokens"
            )
        keep = max(0, min(req.num_keep, limit // 2))
        tail = self._n_ctx // 2 - keep
        log.warning("truncating input prompt: %d tokens to %d", len(prompt), keep + tail)
        return prompt[:keep] + prompt[len(prompt) - tail :]

    def _evaluate_prompt(self, prompt: list[int]) -> int:
        """Bring sequence 0 to ``prompt``, reusing the longest cached prefix; return its length."""
        cached = self._cached
        common = 0
        limit = min(len(cached), len(prompt))
        while common < limit and cached[common] == prompt[common]:
            common += 1
        if common == len(prompt):
            common -= 1  # at least one token must be evaluated to get logits
        if common < len(cached):
            mem = llama_cpp.llama_get_memory(self._ctx.ctx)
            if not llama_cpp.llama_memory_seq_rm(mem, _SEQ, common, -1):
                llama_cpp.llama_memory_seq_rm(mem, _SEQ, -1, -1)
                common = 0
            del cached[common:]
        todo = prompt[common:]
        for start in range(0, len(todo), self._n_batch):
            chunk = todo[start : start + self._n_batch]
            last = start + len(chunk) == len(todo)
            self._decode(chunk, len(cached), logits_last=last)
            cached.extend(chunk)
        return common

    def _decode(self, tokens: Sequence[int], pos: int, *, logits_last: bool) -> None:
        batch = self._batch
        n = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = pos + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = _SEQ
            batch.logits[i] = 0
        if logits_last:
            batch.logits[n - 1] = 1
        batch.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx.ctx, batch)
        if rc != 0:
            raise EngineError(f"llama_decode failed with status {rc}")

    def _shift(self, num_keep: int) -> None:
        """Drop half of what follows the first ``num_keep`` tokens (Ollama's context shift)."""
        cached = self._cached
        keep = max(0, min(num_keep, len(cached) - 2))
        discard = (len(cached) - keep) // 2
        mem = llama_cpp.llama_get_memory(self._ctx.ctx)
        if not llama_cpp.llama_memory_can_shift(mem):
            raise EngineError("the context is full and this model cannot shift it")
        llama_cpp.llama_memory_seq_rm(mem, _SEQ, keep, keep + discard)
        llama_cpp.llama_memory_seq_add(mem, _SEQ, keep + discard, -1, -discard)
        del cached[keep : keep + discard]

    def _sampler(self, s: Sampling, grammar: str, num_keep: int) -> Any:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        last_n = self._n_ctx if s.repeat_last_n < 0 else s.repeat_last_n
        if last_n and (s.repeat_penalty != 1.0 or s.frequency_penalty or s.presence_penalty):
            add(
                chain,
                llama_cpp.llama_sampler_init_penalties(
                    last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty
                ),
            )
        if grammar:
            g = llama_cpp.llama_sampler_init_grammar(self._model.vocab, grammar.encode(), b"root")
            if not g:
                llama_cpp.llama_sampler_free(chain)
                raise EngineError("invalid grammar")
            add(chain, g)
        if s.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        if s.top_k > 0:
            add(chain, llama_cpp.llama_sampler_init_top_k(s.top_k))
        if s.typical_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_typical(s.typical_p, 1))
        if s.top_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
        if s.min_p > 0.0:
            add(chain, llama_cpp.llama_sampler_init_min_p(s.min_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(s.temperature))
        seed = llama_cpp.LLAMA_DEFAULT_SEED if s.seed < 0 else s.seed & 0xFFFFFFFF
        add(chain, llama_cpp.llama_sampler_init_dist(seed))
        return chain

    def _logprob(self, token: int, top_n: int) -> TokenLogprob:
        ptr = llama_cpp.llama_get_logits_ith(self._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).astype(np.float64)
        peak = float(logits.max())
        log_z = peak + math.log(float(np.exp(logits - peak).sum()))
        top: tuple[TopLogprob, ...] = ()
        if top_n > 0:
            idx = np.argpartition(-logits, min(top_n, self._n_vocab - 1))[:top_n]
            idx = idx[np.argsort(-logits[idx])]
            top = tuple(self._entry(int(i), float(logits[i]) - log_z) for i in idx)
        piece = self.piece(token)
        return TokenLogprob(
            token=piece.decode("utf-8", errors="replace"),
            logprob=float(logits[token]) - log_z,
            utf8=piece,
            top=top,
        )

    def _entry(self, token: int, logprob: float) -> TopLogprob:
        piece = self.piece(token)
        return TopLogprob(
            token=piece.decode("utf-8", errors="replace"), logprob=logprob, utf8=piece
        )

    # ------------------------------------------------------------------ embeddings

    def embed(self, texts: Sequence[str], *, truncate: bool) -> tuple[list[list[float]], int]:
        raise EngineError("embeddings are not supported by this runner yet")
