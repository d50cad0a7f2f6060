"""Slots and the sequences that occupy them.

A slot is one KV-cache sequence of the context (``seq`` id = slot index). It remembers the
tokens whose KV it holds, so a new request goes to the free slot whose cache shares the longest
prefix with its prompt (llama-server's slot similarity) and evaluates only what differs. When
another slot, busy or not, holds a much longer prefix of the prompt (the same system prompt in
another conversation), that prefix is copied into the new request's slot instead of evaluated
again (``pick_donor``), and a new conversation takes an empty slot rather than cut another
conversation's cache back to the prefix they share (``pick_slot``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from proto import Generate, TokenLogprob
from runner.engine import PromptTooLongError, SeqSampler, Span
from runner.output import TextAssembler

__all__ = [
    "SIMILARITY",
    "Seq",
    "Slot",
    "common_prefix",
    "copy_min",
    "fit_prompt",
    "pick_donor",
    "pick_slot",
]

log = logging.getLogger(__name__)

SIMILARITY = 0.5  # share of a prompt a slot's cache must hold to be chosen for it (llama-server)
# A copy moves a sequence's whole KV stream (n_ctx cells) and costs about what evaluating
# n_ctx / 900 .. n_ctx / 1500 prompt tokens does (SmolLM2, 2 CPU cores: +6.8 ms at n_ctx 2048,
# +16.3 ms at 8192, against ~3 ms a prompt token; a larger model's cells and tokens grow
# alike). So a copy is made only when it spares at least this many tokens, 4x its cost or more:
COPY_MIN_TOKENS = 32
COPY_MIN_SHARE_OF_CTX = 1 / 256


class Slot:
    __slots__ = ("cached", "embedding", "index", "seq", "used")

    def __init__(self, index: int) -> None:
        self.index = index
        self.cached: list[int] = []  # tokens whose KV the sequence holds, in position order
        self.seq: Seq | None = None  # the generation request it serves now
        self.embedding = False  # it serves an Embed request now (runner.embedding)
        self.used = 0  # when it was last taken (a counter), for least-recently-used picks

    @property
    def free(self) -> bool:
        return self.seq is None and not self.embedding


class Seq:
    """One generation request between admission and its terminal message."""

    __slots__ = (
        "count",
        "first",
        "ids",
        "n_ctx",
        "n_eval",
        "pending",
        "probs",
        "prompt",
        "prompt_cached",
        "prompt_s",
        "req",
        "sampler",
        "slot",
        "spans",
        "started",
        "text",
    )

    def __init__(
        self,
        req: Generate,
        slot: Slot,
        prompt: list[int],
        sampler: SeqSampler,
        cached: int,
        n_ctx: int,
    ) -> None:
        self.req = req
        self.n_ctx = n_ctx  # this request's context: the runner's, or less if it asked so
        self.slot = slot
        self.prompt = prompt
        self.sampler = sampler
        self.prompt_cached = cached
        self.n_eval = cached  # prompt tokens in the slot's cache so far
        self.pending = -1  # the sampled token to decode next step; -1 = none
        self.text = TextAssembler(req.stop)
        self.ids: list[int] = []  # sampled ids not yet sent (their text is held back)
        self.probs: list[TokenLogprob] = []
        self.first = True
        self.count = 0
        self.started = time.perf_counter()
        self.prompt_s = 0.0
        self.spans: list[Span] = []  # images of the prompt not evaluated yet (runner.media)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share. Slices compare in C, a block at a time:
    each admission compares every slot's cache with the prompt (32k tokens: ~0.1 ms, where a
    Python loop took 2.5 ms)."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i : i + _BLOCK] == b[i : i + _BLOCK]:
        i += _BLOCK
    i = min(i, n)
    while i < n and a[i] == b[i]:
        i += 1
    return i


_BLOCK = 512


def pick_slot(
    slots: Sequence[Slot], prompt: Sequence[int], *, copy_min: int = 0
) -> tuple[Slot, int]:
    """The free slot to serve ``prompt`` and the length of the prefix it already holds.

    The slot sharing the longest prefix wins when that prefix covers at least
    ``SIMILARITY`` of the prompt; otherwise an empty slot, else the least recently used one, so
    a new conversation does not overwrite another's cache for a few shared tokens. Between
    equals, the slot that keeps the busy ids in fewer runs of consecutive ids: each run is one
    graph compute per step (``runner.batch``).

    When prefixes can be copied (``copy_min`` > 0, what a copy must spare), a slot that holds
    ``copy_min`` tokens or more past the shared prefix holds another conversation (the same
    system prompt, then its own turns): an empty slot is taken instead, the prefix is copied
    into it (``pick_donor``), and that conversation's next turn finds its cache whole.
    """
    free = [slot for slot in slots if slot.free]
    if not free:
        raise RuntimeError("no free slot")
    best, best_common = free[0], -1
    for slot in free:
        common = common_prefix(slot.cached, prompt)
        if common > best_common:
            best, best_common = slot, common
    busy = {slot.index for slot in slots if slot.seq is not None}
    if prompt and best_common >= SIMILARITY * len(prompt):
        other_conversation = len(best.cached) - best_common >= copy_min
        empty = [slot for slot in free if not slot.cached]
        if not (copy_min and best_common >= copy_min and other_conversation and empty):
            return best, best_common
        return min(empty, key=lambda s: (_runs(busy | {s.index}), s.used)), 0
    lru = min(free, key=lambda s: (bool(s.cached), _runs(busy | {s.index}), s.used))
    return lru, common_prefix(lru.cached, prompt)


def copy_min(n_ctx: int) -> int:
    """The fewest prompt tokens a copy must spare, in a context of ``n_ctx`` per sequence."""
    return max(COPY_MIN_TOKENS, int(n_ctx * COPY_MIN_SHARE_OF_CTX))


def pick_donor(slots: Sequence[Slot], slot: Slot, prompt: Sequence[int]) -> tuple[Slot | None, int]:
    """The other slot whose cache holds the longest prefix of ``prompt``, and its length."""
    best: Slot | None = None
    best_common = 0
    for other in slots:
        if other is not slot:
            common = common_prefix(other.cached, prompt)
            if common > best_common:
                best, best_common = other, common
    return best, best_common


def _runs(ids: set[int]) -> int:
    return sum(1 for i in ids if i - 1 not in ids)


def fit_prompt(prompt: list[int], req: Generate, n_ctx: int) -> list[int]:
    """The prompt itself, or with its middle cut out (Ollama) when it cannot fit the context."""
    limit = n_ctx - 1
    if len(prompt) <= limit:
        return prompt
    if not (req.truncate and req.shift):
        raise PromptTooLongError(
            "the prompt is longer than the context length currently available to the model;"
            f" prompt {len(prompt)} tokens, context {n_ctx} tokens"
        )
    keep = max(0, min(req.num_keep, limit // 2))
    tail = n_ctx // 2 - keep
    log.warning("truncating input prompt: %d tokens to %d", len(prompt), keep + tail)
    return prompt[:keep] + prompt[len(prompt) - tail :]
