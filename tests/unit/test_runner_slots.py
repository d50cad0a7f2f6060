"""Slot choice (prefix similarity, then empty, then least recently used), prompt fitting, and
the outbox's merging of interleaved requests' tokens."""

from __future__ import annotations

import pytest

from proto import Done, Generate, Stats, Tokens
from runner.engine import PromptTooLongError
from runner.outbox import _coalesce
from runner.slots import Slot, fit_prompt, pick_slot


def slots(*caches: list[int], used: tuple[int, ...] = ()) -> list[Slot]:
    out = []
    for i, cache in enumerate(caches):
        slot = Slot(i)
        slot.cached = list(cache)
        slot.used = used[i] if used else i
        out.append(slot)
    return out


def test_the_slot_holding_most_of_the_prompt_wins() -> None:
    s = slots([1, 2, 3], [1, 2, 3, 4, 5, 9], [])
    slot, common = pick_slot(s, [1, 2, 3, 4, 5, 6])
    assert (slot.index, common) == (1, 5)


def test_a_short_shared_prefix_takes_an_empty_slot_not_a_cache() -> None:
    s = slots([1, 2, 3, 4, 5, 6, 7, 8], [])
    slot, common = pick_slot(s, [1, 9, 9, 9])
    assert (slot.index, common) == (1, 0)


def test_without_an_empty_slot_the_least_recently_used_is_reused() -> None:
    s = slots([5, 6], [7, 8], [9], used=(3, 1, 2))
    slot, _ = pick_slot(s, [1, 2])
    assert slot.index == 1


def test_busy_slots_are_never_picked() -> None:
    s = slots([1, 2, 3], [])
    s[0].seq = object()  # type: ignore[assignment]
    slot, common = pick_slot(s, [1, 2, 3, 4])
    assert (slot.index, common) == (1, 0)


def test_fit_prompt_keeps_the_head_and_the_tail_or_refuses() -> None:
    prompt = list(range(20))
    req = Generate(id=1, num_keep=2)
    assert fit_prompt(prompt, req, 32) == prompt
    cut = fit_prompt(prompt, req, 10)
    assert cut == [0, 1, 17, 18, 19]
    with pytest.raises(PromptTooLongError):
        fit_prompt(prompt, Generate(id=1, shift=False), 10)


def test_interleaved_tokens_merge_per_request_and_never_pass_their_done() -> None:
    msgs = [
        Tokens(id=1, text="a", ids=(1,), first=True),
        Tokens(id=2, text="x", ids=(7,), first=True),
        Tokens(id=1, text="b", ids=(2,)),
        Done(id=1, reason="stop", stats=Stats()),
        Tokens(id=2, text="y", ids=(8,)),
        Tokens(id=1, text="late", ids=(3,)),
    ]
    out = _coalesce(msgs)  # type: ignore[arg-type]
    assert out == [
        Tokens(id=1, text="ab", ids=(1, 2), first=True),
        Tokens(id=2, text="xy", ids=(7, 8), first=True),
        Done(id=1, reason="stop", stats=Stats()),
        Tokens(id=1, text="late", ids=(3,)),
    ]
