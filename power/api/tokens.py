"""Tokenize and detokenize with a model's own tokenizer, on a leased runner.

Used by Anthropic's ``count_tokens`` and by token-array inputs on the OpenAI routes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.datastructures import State

from power.api import pipeline
from power.errors import InvalidRequestError, ProtocolError
from power.store.model import LocalModel
from power.supervisor.service import Runners, RunnerStats
from proto import Detokenize, Detokenized, Msg, Tokenize, Tokenized

__all__ = ["detokenize", "tokenize"]


async def _call(
    state: State,
    model: LocalModel,
    build: Callable[[int], Msg],
    keep_alive: Any,
    check: Callable[[RunnerStats], None] | None = None,
) -> object:
    prep = pipeline.prepare(state.settings, model, None, keep_alive)
    runners: Runners = state.runners
    if check is not None:
        check(await runners.load(model, prep.options.load, prep.keep_alive_s))
    return await runners.call(model, prep.options.load, prep.keep_alive_s, build)


async def tokenize(
    state: State, model: LocalModel, text: str, *, add_special: bool = False, keep_alive: Any = None
) -> list[int]:
    reply = await _call(
        state,
        model,
        lambda i: Tokenize(id=i, text=text, add_special=add_special, parse_special=True),
        keep_alive,
    )
    if not isinstance(reply, Tokenized):
        raise ProtocolError(f"expected Tokenized, got {reply!r}", model=model.name)
    return list(reply.tokens)


async def detokenize(
    state: State, model: LocalModel, tokens: list[int], *, keep_alive: Any = None
) -> str:
    """Token ids back to text; an id outside the model's vocabulary is a 400 (llama.cpp would
    abort the runner on it)."""

    def check(stats: RunnerStats) -> None:
        n_vocab = stats.n_vocab
        bad = next((t for t in tokens if not 0 <= t < n_vocab), None) if n_vocab else None
        if bad is not None:
            raise InvalidRequestError(
                f"token id {bad} is out of range: {model.name} has {n_vocab} tokens"
            )

    reply = await _call(
        state, model, lambda i: Detokenize(id=i, tokens=tuple(tokens)), keep_alive, check
    )
    if not isinstance(reply, Detokenized):
        raise ProtocolError(f"expected Detokenized, got {reply!r}", model=model.name)
    return reply.text
