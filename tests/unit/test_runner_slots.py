"""Slot choice (prefix similarity, then empty, then least recently used), prefix copies from
another slot, prompt fitting, and the outbox's merging of interleaved requests' tokens."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from proto import Done, Generate, LoadParams, Stats, Tokens
from runner.batch import Scheduler
from runner.engine import Chunk, PromptTooLongError
from runner.fake import FakeEngine
from runner.outbox import _coalesce
from runner.slots import Slot, common_prefix, copy_min, fit_prompt, pick_donor, pick_slot


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


class _RecordingEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__(mode="count")
        self.steps: list[list[int]] = []

    def decode(self, chunks: Sequence[Chunk]) -> None:
        self.steps.append([c.seq for c in chunks])


def test_each_step_decodes_its_sequences_in_ascending_id_order(tmp_path: Path) -> None:
    # With a KV stream per sequence llama.cpp batches only runs of consecutive ids together,
    # so admission order (here 3, 2, 1, 0) must not leak into the batch.
    model = tmp_path / "m.gguf"
    model.write_bytes(b"")
    engine = _RecordingEngine()
    info = engine.load(LoadParams(model_path=str(model), num_parallel=4), lambda _: True)
    sched = Scheduler(engine, info, lambda msgs: None)
    for slot, used in zip(sched.slots, (4, 2, 3, 1), strict=True):
        slot.cached, slot.used = [7], used  # full slots: the least recently used goes first
    for i in range(4):
        sched.admit(Generate(id=i + 1, prompt=f"p{i} a b", num_predict=3))
    assert [seq.slot.index for seq in sched.active] == [3, 2, 1, 0]
    while sched.active:
        sched.step()
    assert all(ids == sorted(ids) for ids in engine.steps)
    assert [0, 1, 2, 3] in engine.steps


def test_among_empty_slots_the_one_next_to_the_busy_ones_is_taken() -> None:
    s = slots([], [], [], [], used=(4, 3, 2, 1))
    s[0].seq = object()  # type: ignore[assignment]
    slot, _ = pick_slot(s, [1, 2])
    assert slot.index == 1  # not 3, the least recently used: ids 0 and 1 decode as one run


@pytest.mark.parametrize("at", [0, 1, 511, 512, 513, 1024, 1500, 1999])
def test_the_common_prefix_ends_at_the_first_difference_wherever_it_falls(at: int) -> None:
    a = list(range(2000))
    b = [*a[:at], -1, *a[at + 1 :]]
    assert common_prefix(a, b) == at
    assert common_prefix(a, a[:at]) == at  # one holds less
    assert common_prefix(a[:at], a) == at
    assert common_prefix(a, list(a)) == 2000


def test_the_donor_is_the_other_slot_holding_most_of_the_prompt_busy_or_not() -> None:
    s = slots([1, 2, 3, 4, 9], [1, 2, 8], [1, 2, 3, 4, 5, 6])
    s[2].seq = object()  # type: ignore[assignment]
    assert pick_donor(s, s[1], [1, 2, 3, 4, 5, 7]) == (s[2], 5)
    assert pick_donor(s, s[2], [1, 2, 3, 4, 5, 7]) == (s[0], 4)
    assert pick_donor(s, s[0], [7]) == (None, 0)


def test_another_conversation_on_the_same_prefix_takes_an_empty_slot_when_copies_work() -> None:
    system, theirs, mine = list(range(40)), list(range(100, 140)), [200, 201]
    s = slots(system + theirs, [])
    assert pick_slot(s, system + mine) == (s[0], 40)  # no copies: the shared prefix wins
    assert pick_slot(s, system + mine, copy_min=32) == (s[1], 0)  # theirs stays whole
    s = slots(system + theirs[:31], [])  # past the prefix, less than a copy spares
    assert pick_slot(s, system + mine, copy_min=32) == (s[0], 40)
    s = slots(system + theirs)  # no empty slot: the shared prefix wins
    assert pick_slot(s, system + mine, copy_min=32) == (s[0], 40)


def test_a_copy_must_spare_more_tokens_in_a_larger_context() -> None:
    assert copy_min(2048) == 32
    assert copy_min(32768) == 128


def _scheduler(tmp_path: Path, num_parallel: int) -> tuple[FakeEngine, Scheduler]:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"")
    engine = FakeEngine(mode="count")
    info = engine.load(
        LoadParams(model_path=str(model), num_parallel=num_parallel, n_ctx=2048), lambda _: True
    )
    return engine, Scheduler(engine, info, lambda msgs: None)


def test_a_long_prefix_a_busy_slot_holds_is_copied_not_evaluated(tmp_path: Path) -> None:
    engine, sched = _scheduler(tmp_path, 2)
    system = " ".join(f"rule{i}" for i in range(40))
    sched.admit(Generate(id=1, prompt=f"{system} first question", num_predict=100))
    sched.step()  # its prompt is in its slot's cache now
    sched.admit(Generate(id=2, prompt=f"{system} second question", num_predict=2))
    first, second = sched.active
    assert second.slot is not first.slot
    assert engine.prefix_copies == 1
    assert second.prompt_cached == 41  # BOS and the system prompt; the question is evaluated
    assert second.slot.cached == first.slot.cached[:41]


def test_a_short_shared_prefix_is_evaluated_not_copied(tmp_path: Path) -> None:
    engine, sched = _scheduler(tmp_path, 2)
    system = " ".join(f"rule{i}" for i in range(30))  # with BOS: 31 tokens, 1 short of a copy
    sched.admit(Generate(id=1, prompt=f"{system} first question", num_predict=100))
    sched.step()
    sched.admit(Generate(id=2, prompt=f"{system} second question", num_predict=2))
    assert engine.prefix_copies == 0
    assert sched.active[1].prompt_cached == 0


def test_a_slot_holding_the_prefix_itself_needs_no_copy(tmp_path: Path) -> None:
    engine, sched = _scheduler(tmp_path, 2)
    system = " ".join(f"rule{i}" for i in range(40))
    sched.admit(Generate(id=1, prompt=f"{system} first question", num_predict=1))
    while sched.active:
        sched.step()
    sched.admit(Generate(id=2, prompt=f"{system} second question", num_predict=1))
    assert engine.prefix_copies == 0
    assert sched.active[0].prompt_cached == 41


def test_a_finished_conversation_keeps_its_cache_when_another_shares_its_prefix(
    tmp_path: Path,
) -> None:
    engine, sched = _scheduler(tmp_path, 2)
    system = " ".join(f"rule{i}" for i in range(40))
    sched.admit(Generate(id=1, prompt=f"{system} first question", num_predict=40))
    first = sched.active[0]
    while sched.active:
        sched.step()
    theirs = list(first.slot.cached)
    sched.admit(Generate(id=2, prompt=f"{system} second question", num_predict=2))
    second = sched.active[0]
    assert second.slot is not first.slot
    assert engine.prefix_copies == 1
    assert second.prompt_cached == 41
    assert first.slot.cached == theirs  # its next turn evaluates only what is new
