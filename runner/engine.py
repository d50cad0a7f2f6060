"""The engine seam: what a runner needs from a model, whatever computes it.

``LlamaEngine`` (llama-cpp-python) and ``FakeEngine`` (deterministic, for tests) both implement
``Engine``. Every method is called from the runner's one inference thread, except
``tokenize``/``detokenize``/``piece`` which only read the vocabulary.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from proto import Generate, LoadParams, Memory, TokenLogprob

__all__ = ["Engine", "EngineError", "GenStats", "LoadInfo", "PromptTooLongError", "Sampled"]


class EngineError(Exception):
    """A failure of the engine while serving one request."""


class PromptTooLongError(EngineError):
    """The prompt cannot fit the context and may not be truncated."""


@dataclass(frozen=True, slots=True)
class LoadInfo:
    n_ctx: int  # per sequence
    n_ctx_train: int
    n_vocab: int
    num_parallel: int = 1
    gpu_layers: int = 0


@dataclass(frozen=True, slots=True)
class Sampled:
    token: int
    logprob: TokenLogprob | None = None


@dataclass(slots=True)
class GenStats:
    """Filled in by ``Engine.generate`` while it runs."""

    prompt_tokens: int = 0
    prompt_cached: int = 0
    prompt_eval_s: float = 0.0
    context_full: bool = False  # generation ended because the context filled (no shift)
    context: list[int] = field(default_factory=list)


class Engine(Protocol):
    def load(self, params: LoadParams) -> LoadInfo: ...

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def piece(self, token: int) -> bytes: ...

    def is_eog(self, token: int) -> bool: ...

    def generate(
        self, req: Generate, prompt: list[int], stats: GenStats
    ) -> Generator[Sampled, None, None]:
        """Evaluate ``prompt`` (reusing any cached prefix), then yield sampled tokens until closed.

        Each yielded token has been accepted: the next iteration evaluates it. When the context
        is full and the request does not allow shifting, set ``stats.context_full`` and return.
        """
        ...

    def embed(self, texts: Sequence[str], *, truncate: bool) -> tuple[list[list[float]], int]: ...

    def memory(self) -> Memory: ...

    def close(self) -> None: ...
