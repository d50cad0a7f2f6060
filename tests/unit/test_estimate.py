"""The memory estimate, read from a GGUF header: the KV cells each kind of runner holds."""

from __future__ import annotations

import pytest

from power.supervisor.memory import estimate

META = {
    "general.architecture": "llama",
    "llama.block_count": 30,
    "llama.embedding_length": 576,
    "llama.attention.head_count": 9,
    "llama.attention.head_count_kv": 3,
    "llama.context_length": 8192,
    "llama.vocab_size": 49152,
}
PER_CELL = 30 * 2 * 192 * 2  # layers, K and V, 3 KV heads of 64, f16


def kv(*, n_ctx: int, num_parallel: int, n_batch: int = 512, embedding: bool = False) -> int:
    return estimate(META, file_size=1, n_ctx=n_ctx, num_parallel=num_parallel, n_batch=n_batch,
                    embedding=embedding).kv_cache  # fmt: skip


def test_a_generation_model_holds_n_ctx_cells_per_sequence_clamped_to_its_training() -> None:
    assert kv(n_ctx=4096, num_parallel=4) == 4 * 4096 * PER_CELL
    assert kv(n_ctx=16384, num_parallel=1) == 8192 * PER_CELL


def test_a_batch_beyond_the_context_costs_what_the_context_does() -> None:
    """The runner clamps num_batch to the context (llama.cpp batches no more than that)."""

    def total(n_batch: int) -> int:
        return estimate(META, file_size=1, n_ctx=2048, num_parallel=2, n_batch=n_batch).total

    assert total(2**31 - 1) == total(4096) > total(512)


@pytest.mark.parametrize(
    ("n_ctx", "num_parallel", "n_batch", "cells"),
    [
        (4096, 4, 512, 4 * 256 + 4096),  # a small generation context, a full embedding one
        (128, 2, 512, 2 * 128 + 256),  # one decode at least: a batch, at most the context
        (2048, 1, 2**31 - 1, 256 + 2048),  # num_batch beyond the context: clamped to it
        (8192, 1, 512, 256 + 8192),
    ],
)
def test_an_embedding_model_holds_one_embedding_context_and_a_small_generation_one(
    n_ctx: int, num_parallel: int, n_batch: int, cells: int
) -> None:
    assert kv(n_ctx=n_ctx, num_parallel=num_parallel, n_batch=n_batch, embedding=True) == (
        cells * PER_CELL
    )


def test_an_embedding_models_compute_covers_a_whole_context_in_one_decode() -> None:
    """An embedding model embeds a text of up to n_ctx tokens in one decode (its batch is the
    context, not num_batch): its compute buffer holds that many rows of logits."""

    def compute(n_ctx: int) -> int:
        return estimate(META, file_size=10**8, n_ctx=n_ctx, num_parallel=1, n_batch=512,
                        embedding=True).compute  # fmt: skip

    rows = 4096 - 1024
    assert compute(4096) - compute(1024) >= 4 * rows * 49152  # float logits of the extra rows
