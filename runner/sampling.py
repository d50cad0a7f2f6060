"""Per-request sampling for ``LlamaEngine``: a llama.cpp sampler chain, logprobs, JSON schemas.

Everything per token happens inside llama.cpp (penalties, grammar, top-k/p, temperature,
dist); Python only reads the logits row when the request asked for logprobs. The one exception
is plain greedy decoding (temperature 0, no penalty, no grammar): its token is the row's first
maximum, which numpy finds in a tenth of the time ``llama_sampler_sample`` takes to copy the
whole vocabulary into a candidate array first (8 against 80 µs for a 49k vocabulary, four times
a step at four streams).
"""

from __future__ import annotations

import ctypes
import math
import re
from collections.abc import Callable
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from proto import Generate, Sampling, TokenLogprob, TopLogprob
from runner.engine import BadRequestError, EngineError, Sampled

__all__ = ["MAX_GRAMMAR_NESTING", "LlamaSampler", "check_nesting", "grammar_for", "plain_greedy"]

Piece = Callable[[int], bytes]


# How deep a grammar's groups may nest: llama.cpp parses them recursively, on the inference
# thread's stack (30,000 levels overflowed it: the runner died). The gateway keeps the JSON
# schemas it converts well below this; it guards whatever else would get here.
MAX_GRAMMAR_NESTING = 2000
_GBNF_LITERALS = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*')


def check_nesting(grammar: str) -> None:
    """``BadRequestError`` when ``grammar``'s groups nest deeper than ``MAX_GRAMMAR_NESTING``."""
    depth = deepest = 0
    for paren in re.findall(r"[()]", _GBNF_LITERALS.sub("", grammar)):
        depth += 1 if paren == "(" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_GRAMMAR_NESTING:
        raise BadRequestError(
            f"the grammar nests {deepest} groups deep, more than {MAX_GRAMMAR_NESTING}"
        )


def grammar_for(req: Generate) -> str:
    """The GBNF that constrains ``req``: from its JSON schema, else its grammar, else ""."""
    schema = req.json_schema.strip()
    if not schema:
        return req.grammar
    if schema in ("json", '"json"'):
        return JSON_GBNF
    try:
        return str(json_schema_to_gbnf(schema))
    except Exception as exc:  # the converter raises anything from ValueError to KeyError
        raise BadRequestError(f"invalid JSON schema: {exc}") from exc


class LlamaSampler:
    """One request's sampler chain; ``sample(row)`` reads row ``row`` of the last decode."""

    __slots__ = ("_chain", "_ctx", "_n_vocab", "_piece", "_row_type", "_top")

    def __init__(
        self, *, model: Any, ctx: Any, req: Generate, n_ctx: int, n_vocab: int, piece: Piece
    ) -> None:
        self._ctx = ctx
        self._n_vocab = n_vocab
        self._piece = piece
        self._top = req.logprobs
        self._row_type = ctypes.c_float * n_vocab
        grammar = grammar_for(req)
        self._chain = (
            None
            if plain_greedy(req.sampling, grammar)
            else _chain(model, req.sampling, grammar, n_ctx, bool(req.json_schema))
        )

    def sample(self, row: int) -> Sampled:
        if self._chain is None:
            token = int(self._logits(row).argmax())  # the first maximum, as llama.cpp's greedy
        else:
            token = llama_cpp.llama_sampler_sample(self._chain, self._ctx, row)
        if self._top < 0:
            return Sampled(token)
        return Sampled(token, self._logprob(token, row))

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None

    def _logits(self, row: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Row ``row`` of the last decode's logits, as a view (valid until the next decode)."""
        ptr = llama_cpp.llama_get_logits_ith(self._ctx, row)
        if not ptr:
            raise EngineError(f"the last decode has no logits for row {row}")
        row_buf: Any = self._row_type.from_address(ctypes.addressof(ptr.contents))
        return np.frombuffer(row_buf, np.float32)

    def _logprob(self, token: int, row: int) -> TokenLogprob:
        logits = self._logits(row).astype(np.float64)
        peak = float(logits.max())
        log_z = peak + math.log(float(np.exp(logits - peak).sum()))
        top: tuple[TopLogprob, ...] = ()
        n = self._top
        if n > 0:
            idx = np.argpartition(-logits, min(n, self._n_vocab - 1))[:n]
            idx = idx[np.argsort(-logits[idx])]
            top = tuple(self._entry(int(i), float(logits[i]) - log_z) for i in idx)
        piece = self._piece(token)
        return TokenLogprob(
            token=piece.decode("utf-8", errors="replace"),
            logprob=float(logits[token]) - log_z,
            utf8=piece,
            top=top,
        )

    def _entry(self, token: int, logprob: float) -> TopLogprob:
        piece = self._piece(token)
        return TopLogprob(
            token=piece.decode("utf-8", errors="replace"), logprob=logprob, utf8=piece
        )


def plain_greedy(s: Sampling, grammar: str) -> bool:
    """True when ``s`` and ``grammar`` leave greedy decoding to pick the row's maximum alone."""
    penalised = s.repeat_last_n != 0 and (
        s.repeat_penalty != 1.0 or s.frequency_penalty or s.presence_penalty
    )
    return s.temperature <= 0 and not grammar and not penalised


def _chain(model: Any, s: Sampling, grammar: str, n_ctx: int, from_schema: bool) -> Any:
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    last_n = n_ctx if s.repeat_last_n < 0 else s.repeat_last_n
    if last_n and (s.repeat_penalty != 1.0 or s.frequency_penalty or s.presence_penalty):
        add(
            chain,
            llama_cpp.llama_sampler_init_penalties(
                model.n_vocab(), last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty
            ),
        )
    if grammar:
        check_nesting(grammar)
        g = llama_cpp.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
        if not g:
            llama_cpp.llama_sampler_free(chain)
            if from_schema:
                raise BadRequestError("invalid JSON schema: llama.cpp rejected its grammar")
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
