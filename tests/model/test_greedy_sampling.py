"""Plain greedy decoding picks the row's maximum in numpy; it must pick what llama.cpp's own
greedy sampler picks, row by row, over real SmolLM2 logits from a batched decode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest

from proto import Generate, LoadParams, Sampling
from runner.engine import Chunk, EngineError
from runner.llama_engine import LlamaEngine
from runner.sampling import plain_greedy

pytestmark = pytest.mark.model

PROMPTS = (
    "<|im_start|>user\nWrite a story about a lighthouse.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nList the planets.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
)


@pytest.fixture(scope="module")
def engine(smollm2_gguf: Path) -> Iterator[LlamaEngine]:
    eng = LlamaEngine()
    eng.load(
        LoadParams(model_path=str(smollm2_gguf), n_ctx=512, n_threads=2, num_parallel=3),
        lambda fraction: True,
    )
    yield eng
    eng.close()


def llama_greedy(engine: LlamaEngine, row: int) -> int:
    """The token llama.cpp's greedy sampler picks from row ``row`` of the last decode."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    try:
        return int(llama_cpp.llama_sampler_sample(chain, engine._ctx, row))
    finally:
        llama_cpp.llama_sampler_free(chain)


def test_the_numpy_argmax_picks_llama_cpps_greedy_token_on_every_row(
    engine: LlamaEngine,
) -> None:
    greedy = Sampling(temperature=0)
    prompts = [engine.tokenize(p, add_special=False, parse_special=True) for p in PROMPTS]
    samplers = [engine.sampler(Generate(id=k, prompt="", sampling=greedy), p)
                for k, p in enumerate(prompts)]  # fmt: skip
    assert plain_greedy(greedy, "")  # the numpy path is the one under test
    for k in range(len(prompts)):
        engine.forget(k, 0)
    chunks = [Chunk(k, p, 0, True) for k, p in enumerate(prompts)]
    positions = [len(p) for p in prompts]
    picked: list[list[int]] = [[] for _ in prompts]
    for _ in range(24):
        engine.decode(chunks)
        rows = []
        row = -1
        for chunk in chunks:
            row += len(chunk.tokens)
            rows.append(row)
        tokens = [s.sample(r).token for s, r in zip(samplers, rows, strict=True)]
        assert tokens == [llama_greedy(engine, r) for r in rows]
        for k, token in enumerate(tokens):
            picked[k].append(token)
        chunks = [Chunk(k, [t], positions[k], True) for k, t in enumerate(tokens)]
        positions = [p + 1 for p in positions]
    assert len({tuple(p) for p in picked}) == len(prompts)  # three different answers
    for s in samplers:
        s.close()


def test_a_row_without_logits_is_an_engine_error(engine: LlamaEngine) -> None:
    prompt = engine.tokenize(PROMPTS[2], add_special=False, parse_special=True)
    engine.forget(0, 0)
    engine.decode([Chunk(0, prompt, 0, True)])  # only the last row has logits
    greedy = Generate(id=1, prompt="", sampling=Sampling(temperature=0))
    sampler = engine.sampler(greedy, prompt)
    with pytest.raises(EngineError, match="no logits for row 0"):
        sampler.sample(0)
