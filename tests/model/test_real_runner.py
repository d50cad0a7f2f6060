"""The real runner (llama-cpp-python) with the real SmolLM2 GGUF, behind the real Supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from power.errors import InvalidRequestError, RunnerCrashedError
from power.store.model import LocalModel
from power.supervisor import Supervisor
from proto import Detokenize, Detokenized, LoadParams
from tests.support.spawn import Spawner, collect_tokens, gen, llama_settings, llama_spawner

pytestmark = [pytest.mark.anyio, pytest.mark.model]

CHAT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
)


async def kill_on_first_batch(events: AsyncIterator[list[Any]], spawn: Spawner) -> None:
    async for _batch in events:
        os.kill(spawn.runners[0].pid, signal.SIGKILL)


async def test_greedy_output_is_reproducible_and_limits_hold(
    tmp_path: Path, model: LocalModel
) -> None:
    spawn = llama_spawner()
    params = LoadParams(model_path=model.model_path, n_ctx=2048, n_threads=2)
    prompt = CHAT.format(q="Describe Paris, the capital of France, in detail.")
    async with Supervisor.open(llama_settings(tmp_path), spawn=spawn) as sup:
        first, done1, _ = await collect_tokens(
            sup.request(model, params, None, gen(prompt, num_predict=24))
        )
        again, done2, _ = await collect_tokens(
            sup.request(model, params, None, gen(prompt, num_predict=24))
        )
        assert first == again
        assert "Paris" in first
        assert done1.reason == "length"
        assert done1.stats.eval_tokens == 24
        # the second request re-evaluated only the last prompt token: the KV cache was reused
        assert done2.stats.prompt_cached == done2.stats.prompt_tokens - 1
        ready = spawn.runners[0].ready
        assert ready is not None
        assert ready.memory.rss > 50 * 1024 * 1024
        assert ready.n_ctx == 2048


async def test_stop_strings_are_trimmed_and_eos_ends_with_stop(
    tmp_path: Path, model: LocalModel
) -> None:
    params = LoadParams(model_path=model.model_path, n_ctx=1024, n_threads=2)
    prompt = CHAT.format(q="Count from 1 to 10, separated by commas.")
    async with Supervisor.open(llama_settings(tmp_path), spawn=llama_spawner()) as sup:
        full, _, _ = await collect_tokens(
            sup.request(model, params, None, gen(prompt, num_predict=40))
        )
        assert "4" in full
        cut, done, _ = await collect_tokens(
            sup.request(model, params, None, gen(prompt, num_predict=40, stop=("4",)))
        )
        assert done.reason == "stop"
        assert "4" not in cut
        assert full.startswith(cut)
        _short, done, _ = await collect_tokens(
            sup.request(model, params, None, gen(CHAT.format(q="Say hi."), num_predict=200))
        )
        assert done.reason == "stop"
        assert done.stats.eval_tokens < 200


async def test_logprobs_and_token_ids_come_with_the_tokens(
    tmp_path: Path, model: LocalModel
) -> None:
    params = LoadParams(model_path=model.model_path, n_ctx=1024, n_threads=2)
    async with Supervisor.open(llama_settings(tmp_path), spawn=llama_spawner()) as sup:
        _, done, tokens = await collect_tokens(
            sup.request(model, params, None, gen(CHAT.format(q="Hi"), num_predict=5, logprobs=3))
        )
        ids = [i for t in tokens for i in t.ids]
        probs = [lp for t in tokens for lp in t.logprobs]
        assert len(ids) == len(probs) == done.stats.eval_tokens
        for lp in probs:
            assert lp.logprob <= 0
            assert len(lp.top) == 3
            assert lp.top[0].logprob >= lp.logprob  # greedy picks the best


async def test_cancel_then_kill_9_mid_stream(tmp_path: Path, model: LocalModel) -> None:
    spawn = llama_spawner()
    params = LoadParams(model_path=model.model_path, n_ctx=1024, n_threads=2)
    prompt = CHAT.format(q="Write a long story about a dragon.")
    async with Supervisor.open(llama_settings(tmp_path), spawn=spawn) as sup:
        events = sup.request(model, params, None, gen(prompt, num_predict=500))
        async for _batch in events:
            break
        await events.aclose()  # type: ignore[attr-defined]
        # served at once after the cancel: the runner stopped generating within a token
        _, done, _ = await asyncio.wait_for(
            collect_tokens(sup.request(model, params, None, gen(prompt, num_predict=3))), 30
        )
        assert done.stats.eval_tokens == 3
        events = sup.request(model, params, None, gen(prompt, num_predict=500))
        with pytest.raises(RunnerCrashedError, match="SIGKILL"):
            await kill_on_first_batch(events, spawn)
        assert len(spawn.runners) == 1


def detokenize(tokens: tuple[int, ...]) -> Callable[[int], Detokenize]:
    return lambda i: Detokenize(id=i, tokens=tokens)


async def test_token_ids_outside_the_vocabulary_are_bad_requests_naming_the_id(
    tmp_path: Path, model: LocalModel
) -> None:
    spawn = llama_spawner()
    params = LoadParams(model_path=model.model_path, n_ctx=1024, n_threads=2)
    async with Supervisor.open(llama_settings(tmp_path), spawn=spawn) as sup:
        for bad in (49152, 99999, -1):  # SmolLM2's vocabulary is ids 0..49151
            context = (1, 2, bad, 3)
            with pytest.raises(InvalidRequestError, match=rf"token id {bad} .*0 to 49151"):
                await collect_tokens(sup.request(model, params, None, gen("Hi", tokens=context)))
            with pytest.raises(InvalidRequestError, match=rf"token id {bad} "):
                await sup.call(model, params, None, detokenize(context))
        ok = await sup.call(
            model, params, None, lambda i: Detokenize(id=i, tokens=(19556, 28, 905))
        )
        assert isinstance(ok, Detokenized)
        assert ok.text
        _, done, _ = await collect_tokens(
            sup.request(model, params, None, gen("Hi", tokens=(1, 2, 3), num_predict=2))
        )
        assert done.stats.eval_tokens == 2
        assert len(spawn.runners) == 1  # the runner served every bad request and lives on
