"""How the scheduler packs ``Embed`` inputs into decodes: many texts per decode, in order, a
long text alone in parts, a small share beside generating sequences, requests taking turns, and
a cancel between two decodes that leaves no half-evaluated text behind."""

from __future__ import annotations

from collections.abc import Sequence

from proto import Done, Embed, Embeddings, Failed, Generate, Msg, Sampling
from runner.batch import Scheduler
from runner.embedding import SHARED_TOKENS
from runner.engine import EmbedPart, LoadInfo
from runner.fake import FakeEngine


class Recording(FakeEngine):
    """The fake engine, remembering each embedding decode's parts and each forgotten sequence."""

    def __init__(self) -> None:
        super().__init__(mode="count")
        self.decodes: list[list[tuple[int, int, bool]]] = []  # (seq, tokens, last) per part
        self.forgotten: list[int] = []

    def embed(self, parts: Sequence[EmbedPart]) -> list[list[float] | None]:
        self.decodes.append([(p.seq, len(p.tokens), p.last) for p in parts])
        return super().embed(parts)

    def embed_forget(self, seq: int) -> None:
        self.forgotten.append(seq)
        super().embed_forget(seq)


def scheduler(
    engine: Recording, *, n_batch: int = 32, seqs: int = 4
) -> tuple[Scheduler, list[Msg]]:
    out: list[Msg] = []
    info = LoadInfo(n_ctx=256, n_vocab=8, num_parallel=2, n_batch=n_batch, embed_seqs=seqs)
    return Scheduler(engine, info, out.extend), out


def texts(n: int, words: int) -> tuple[str, ...]:
    return tuple(" ".join(f"w{i}x{k}" for k in range(words)) for i in range(n))


def vectors(out: list[Msg], req_id: int) -> list[tuple[float, ...]]:
    return [v for m in out if isinstance(m, Embeddings) and m.id == req_id for v in m.vectors]


def test_short_texts_share_decodes_and_come_back_in_order() -> None:
    engine = Recording()
    sched, out = scheduler(engine, n_batch=32, seqs=4)
    inputs = texts(10, 5)  # 5 tokens each: 4 to a decode (the sequence limit)
    sched.admit_embed(Embed(id=1, inputs=inputs))
    while sched.busy:
        sched.step()
    assert [len(d) for d in engine.decodes] == [4, 4, 2]
    assert all(seq == k for d in engine.decodes for k, (seq, _, _) in enumerate(d))
    got = vectors(out, 1)
    alone = []
    for text in inputs:  # each text on its own gives the same vector
        solo, solo_out = scheduler(engine)
        solo.admit_embed(Embed(id=2, inputs=(text,)))
        while solo.busy:
            solo.step()
        alone += vectors(solo_out, 2)
    assert got == alone
    (done,) = [m for m in out if isinstance(m, Done)]
    assert done.reason == "stop"
    assert done.stats.prompt_tokens == 50


def test_the_token_budget_closes_a_decode() -> None:
    engine = Recording()
    sched, _ = scheduler(engine, n_batch=12, seqs=8)
    sched.admit_embed(Embed(id=1, inputs=texts(5, 5)))  # 2 fit 12 tokens
    while sched.busy:
        sched.step()
    assert [[n for _, n, _ in d] for d in engine.decodes] == [[5, 5], [5, 5], [5]]


def test_a_text_longer_than_a_decode_goes_alone_in_parts() -> None:
    engine = Recording()
    sched, out = scheduler(engine, n_batch=8, seqs=4)
    long = " ".join(f"t{k}" for k in range(20))
    sched.admit_embed(Embed(id=1, inputs=("a b", long, "c"), normalize=False))
    while sched.busy:
        sched.step()
    assert engine.decodes == [
        [(0, 2, True)],  # the long one does not fit beside it: it waits
        [(0, 8, False)],
        [(0, 8, False)],
        [(0, 4, True)],
        [(0, 1, True)],
    ]
    assert [v[0] for v in vectors(out, 1)] == [2.0, 20.0, 1.0]  # (the fake's token count)


def test_beside_a_generation_a_decode_packs_a_small_share() -> None:
    engine = Recording()
    sched, out = scheduler(engine, n_batch=512, seqs=64)
    sched.admit(Generate(id=1, prompt="go", num_predict=4, sampling=Sampling(temperature=0)))
    sched.admit_embed(Embed(id=2, inputs=texts(200, 5)))
    while sched.active:
        sched.step()
    shared = engine.decodes[0]
    assert sum(n for _, n, _ in shared) <= SHARED_TOKENS
    while sched.busy:
        sched.step()
    assert len(engine.decodes[-1]) > len(shared)  # alone again: a full decode
    assert len(vectors(out, 2)) == 200


def test_two_requests_take_turns_at_the_head_of_a_decode() -> None:
    engine = Recording()
    sched, out = scheduler(engine, n_batch=10, seqs=8)
    sched.admit_embed(Embed(id=1, inputs=texts(6, 5)))
    sched.admit_embed(Embed(id=2, inputs=texts(2, 5)))
    sched.step()  # request 1 first: 2 of its texts fill the decode
    sched.step()  # request 2 first: both of its texts
    assert [m.id for m in out if isinstance(m, Done)] == [2]  # it did not wait for request 1
    while sched.busy:
        sched.step()
    assert [len(vectors(out, 1)), len(vectors(out, 2))] == [6, 2]


def test_a_cancel_between_parts_forgets_the_half_evaluated_text() -> None:
    engine = Recording()
    sched, out = scheduler(engine, n_batch=8, seqs=4)
    sched.admit_embed(Embed(id=1, inputs=(" ".join(f"t{k}" for k in range(20)), "a")))
    sched.step()
    assert engine.decodes == [[(0, 8, False)]]
    sched.cancel([1])
    assert engine.forgotten == [0]
    assert not sched.busy
    assert [m.reason for m in out if isinstance(m, Done)] == ["cancel"]
    sched.admit_embed(Embed(id=2, inputs=("a b",), normalize=False))
    while sched.busy:
        sched.step()
    assert vectors(out, 2)[0][0] == 2.0  # nothing of the cancelled text counted


def test_a_text_that_may_not_be_cut_fails_its_request_only() -> None:
    engine = Recording()
    sched, out = scheduler(engine, n_batch=512, seqs=8)
    long = " ".join(f"t{k}" for k in range(300))  # over n_ctx=256
    sched.admit_embed(Embed(id=1, inputs=("a", long), truncate=False))
    sched.admit_embed(Embed(id=2, inputs=("b c",)))
    while sched.busy:
        sched.step()
    (failed,) = [m for m in out if isinstance(m, Failed)]
    assert failed.id == 1
    assert "exceeds the context length" in failed.message
    assert not vectors(out, 1)  # the vector of its first input is not sent after the failure
    assert len(vectors(out, 2)) == 1
