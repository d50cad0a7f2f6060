"""The engine seam: what a runner needs from a model, whatever computes it.

``LlamaEngine`` (llama-cpp-python) and ``FakeEngine`` (deterministic, for tests) both implement
``Engine``. The runner's scheduler (``runner.batch``) owns the sequences, their slots and the
prompt cache; an engine only evaluates batches of ``Chunk`` s (one decode per step, every
sequence of the step in it), samples from a row of the last decode, and edits one sequence's
cache. Every method is called from the runner's one inference thread, except
``tokenize``/``detokenize``/``piece``/``is_eog``, which only read the vocabulary and may also be
called from the runner's vocabulary thread (``runner.vocab``) at the same time. Images enter a
prompt as ``Media`` that the engine made (``media_prompt``) and evaluates on its own
(``decode_media``); ``runner.media`` schedules them. Texts to embed are packed, many to a
decode, into sequences of their own (``EmbedPart``, ``embed``), apart from the generating ones,
so the scheduler can interleave embedding decodes with generation steps and stop between two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from proto import CpuMode, Generate, LoadParams, Memory, TokenLogprob

__all__ = [
    "BadRequestError",
    "Chunk",
    "EmbedPart",
    "Engine",
    "EngineError",
    "LoadInfo",
    "Media",
    "OnProgress",
    "PromptTooLongError",
    "Sampled",
    "SeqSampler",
    "Span",
]


class EngineError(Exception):
    """A failure of the engine while serving one request."""


class BadRequestError(EngineError):
    """The request cannot be served as asked (reported as a 400)."""


class PromptTooLongError(BadRequestError):
    """The prompt cannot fit the context and may not be truncated."""


OnProgress = Callable[[float], bool]
"""How a load reports: called on the inference thread with the fraction done, as often as the
engine likes (the runner rate-limits what it sends). It returns False once the runner is
stopping: the engine then abandons the load and raises ``EngineError``."""


@dataclass(frozen=True, slots=True)
class LoadInfo:
    n_ctx: int  # per sequence
    n_vocab: int
    num_parallel: int = 1
    gpu_layers: int = 0  # layers actually offloaded to a GPU
    n_batch: int = 512  # tokens one decode takes at most
    cpu_mode: CpuMode = CpuMode.EXTRA  # the mode the model was loaded in
    embed_seqs: int = 1  # texts one embedding decode takes at most
    copies_prefix: bool = False  # ``Engine.copy_prefix`` works (runner.slots.pick_donor)


@dataclass(frozen=True, slots=True)
class Sampled:
    token: int
    logprob: TokenLogprob | None = None


@dataclass(slots=True)
class Chunk:
    """Tokens of one sequence in a decode: they take positions ``pos``, ``pos + 1``, …"""

    seq: int
    tokens: list[int]
    pos: int
    logits: bool  # the last token's logits are needed (a sample follows)


class Media(Protocol):
    """An encoded piece of an image, made by the engine; it fills ``n_tokens`` positions."""

    @property
    def n_tokens(self) -> int: ...

    def close(self) -> None:
        """Free it now (it is freed when collected anyway); closing twice does nothing."""
        ...


@dataclass(slots=True)
class Span:
    """``media`` at prompt index ``start``: the prompt holds placeholders for its positions."""

    start: int
    media: Media


class SeqSampler(Protocol):
    """One request's sampling state: options, grammar, penalties, seed."""

    def sample(self, row: int) -> Sampled:
        """Sample from row ``row`` of the last decode (the token index in that batch)."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True)
class EmbedPart:
    """Tokens of one text in an embedding decode, at positions ``pos``, ``pos + 1``, … of its
    embedding sequence ``seq`` (``0 .. LoadInfo.embed_seqs - 1``, apart from the slots')."""

    seq: int
    tokens: list[int]
    pos: int
    last: bool  # the text ends here: its vector is wanted


class Engine(Protocol):
    def about(self) -> tuple[str, str]:
        """What computes (name and version) and the CPU features it uses, for ``Hello``."""
        ...

    def load(self, params: LoadParams, progress: OnProgress) -> LoadInfo:
        """Load the model, reporting ``progress`` often enough that a load that goes on never
        looks stalled (the gateway kills one that is silent for ``load_timeout_s``);
        ``EngineError`` when it cannot, or when ``progress`` said stop."""
        ...

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def piece(self, token: int) -> bytes: ...

    def is_eog(self, token: int) -> bool: ...

    def sampler(self, req: Generate, prompt: Sequence[int]) -> SeqSampler:
        """A sampler for ``req``; ``BadRequestError`` when its grammar or schema is invalid."""
        ...

    def decode(self, chunks: Sequence[Chunk]) -> None:
        """Evaluate every chunk in one batch; ``EngineError`` when that fails."""
        ...

    def media_prompt(
        self, text: str, images: Sequence[bytes], *, add_special: bool, limit: int = 0
    ) -> tuple[list[int], list[Span]]:
        """Tokens of ``text`` with each ``[img-N]`` tag replaced by image N's positions (negative
        placeholders), and the images' spans; ``BadRequestError`` when the model has no
        projector or an image cannot be read, ``PromptTooLongError`` as soon as the prompt
        reaches ``limit`` positions (0: none), before more images are encoded."""
        ...

    def decode_media(self, seq: int, media: Media, pos: int) -> None:
        """Evaluate ``media`` into sequence ``seq`` from position ``pos``; ``EngineError`` when
        that fails."""
        ...

    def forget(self, seq: int, start: int) -> bool:
        """Drop what sequence ``seq`` cached from position ``start`` on; False if it cannot."""
        ...

    def shift(self, seq: int, keep: int, discard: int) -> None:
        """Drop positions ``keep .. keep + discard`` of ``seq`` and move the rest back."""
        ...

    def copy_prefix(self, src: int, dst: int, n: int) -> bool:
        """Make sequence ``dst`` hold positions ``0 .. n`` of sequence ``src`` and nothing else
        (only when ``LoadInfo.copies_prefix``); False if that failed, ``dst`` then empty."""
        ...

    def embed_tokens(self, text: str, *, n_ctx: int, truncate: bool) -> list[int]:
        """The tokens of ``text`` to embed (cut to what one text may take when ``truncate``);
        ``PromptTooLongError`` when they do not fit ``n_ctx`` (at most the runner's context).
        A text longer than one decode (``LoadInfo.n_batch``) is embedded in parts, each part
        in a decode of its own; an engine that cannot split a text limits it to one decode."""
        ...

    def embed(self, parts: Sequence[EmbedPart]) -> list[list[float] | None]:
        """Evaluate ``parts`` in one decode; for each part that is its text's ``last``, the
        text's vector (pooled as the model pools, else the mean of its tokens' rows; not
        normalised), None for the others. A text whose last part is in leaves its sequence
        empty. ``EngineError`` when the decode fails (every part's sequence is then empty)."""
        ...

    def embed_forget(self, seq: int) -> None:
        """Drop what a text cut short left in embedding sequence ``seq``."""
        ...

    def memory(self) -> Memory:
        """What the loaded model holds: the process's RSS, and the bytes the model and its
        context placed on GPUs (0 with none)."""
        ...

    def close(self) -> None: ...
