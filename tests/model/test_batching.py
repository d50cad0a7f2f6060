"""Continuous batching, the slot prompt cache, JSON schemas and embeddings with the real SmolLM2."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from power.errors import InvalidRequestError
from power.store.model import LocalModel
from power.supervisor import Supervisor
from proto import Cancel, Done, Embed, Embeddings, LoadParams, Tokens
from tests.support.runners import leased
from tests.support.spawn import collect, drain, gen, llama_settings, llama_spawner

pytestmark = [pytest.mark.anyio, pytest.mark.model]

CHAT = (
    "<|im_start|>system\n{system}<|im_end|>\n"
    "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
)
SYSTEM = "You are a helpful assistant."
QUESTIONS = (
    "What is the capital of France?",
    "Name three colours.",
    "Write a haiku about the sea.",
    "How many legs does a spider have?",
)
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer"},
    },
    "required": ["name", "age"],
}


def params(model: LocalModel, **kw: Any) -> LoadParams:
    kw.setdefault("n_ctx", 1024)
    return LoadParams(model_path=model.model_path, n_threads=2, num_parallel=4, **kw)


def chat(q: str, system: str = SYSTEM) -> str:
    return CHAT.format(system=system, q=q)


async def first_tokens(events: AsyncIterator[list[Any]]) -> list[Any]:
    """Read until the stream has produced text (the request is in the batch)."""
    seen: list[Any] = []
    async for batch in events:
        seen.extend(batch)
        if any(isinstance(m, Tokens) for m in batch):
            break
    return seen


async def rest(head: list[Any], events: AsyncIterator[list[Any]]) -> str:
    async def chained() -> AsyncIterator[list[Any]]:
        yield head
        async for batch in events:
            yield batch

    return (await collect(chained()))[0]


async def test_concurrent_streams_match_sequential_ones(tmp_path: Path, model: LocalModel) -> None:
    spawn = llama_spawner()
    p = params(model)
    async with Supervisor.open(llama_settings(tmp_path), spawn=spawn) as sup:
        alone = [
            await collect(sup.request(model, p, None, gen(chat(q), num_predict=24)))
            for q in QUESTIONS
        ]
        together = await asyncio.gather(
            *(collect(sup.request(model, p, None, gen(chat(q), num_predict=24))) for q in QUESTIONS)
        )
        assert [t for t, _ in together] == [t for t, _ in alone]
        assert [d.stats.eval_tokens for _, d in together] == [d.stats.eval_tokens for _, d in alone]
        assert sum(d.stats.eval_tokens for _, d in together) > 40
        assert len(spawn.runners) == 1
        ready = spawn.runners[0].ready
        assert ready is not None
        assert ready.num_parallel == 4


async def test_cancel_and_join_mid_batch_leave_the_others_intact(
    tmp_path: Path, model: LocalModel
) -> None:
    p = params(model)
    async with Supervisor.open(llama_settings(tmp_path), spawn=llama_spawner()) as sup:
        alone = [
            (await collect(sup.request(model, p, None, gen(chat(q), num_predict=32))))[0]
            for q in QUESTIONS[:3]
        ]
        doomed = sup.request(
            model, p, None, gen(chat("Tell me a very long story."), num_predict=400)
        )
        keep = [sup.request(model, p, None, gen(chat(q), num_predict=32)) for q in QUESTIONS[:2]]
        heads = [await first_tokens(ev) for ev in keep]
        await first_tokens(doomed)
        await doomed.aclose()  # type: ignore[attr-defined]
        joining = sup.request(model, p, None, gen(chat(QUESTIONS[2]), num_predict=32))
        results = await asyncio.gather(
            *(rest(h, ev) for h, ev in zip(heads, keep, strict=True)), collect(joining)
        )
        assert [results[0], results[1], results[2][0]] == alone


async def test_a_shared_system_prompt_is_evaluated_once(tmp_path: Path, model: LocalModel) -> None:
    system = SYSTEM + " " + " ".join(f"Rule {i}: answer briefly and politely." for i in range(40))
    p = params(model)
    async with Supervisor.open(llama_settings(tmp_path), spawn=llama_spawner()) as sup:
        _, first = await collect(
            sup.request(model, p, None, gen(chat(QUESTIONS[0], system), num_predict=4))
        )
        assert first.stats.prompt_cached == 0
        assert first.stats.prompt_tokens > 300
        # a different conversation in between takes another slot, not this one's cache
        await collect(sup.request(model, p, None, gen(chat("Hi"), num_predict=4)))
        _, second = await collect(
            sup.request(model, p, None, gen(chat(QUESTIONS[1], system), num_predict=4))
        )
        new_tokens = second.stats.prompt_tokens - second.stats.prompt_cached
        assert second.stats.prompt_cached > 300
        assert new_tokens < 30
        # the next turn of the first conversation re-evaluates only the new turn
        turn2 = chat(QUESTIONS[1], system) + "Sure." + "<|im_end|>\n<|im_start|>user\nMore?"
        _, third = await collect(sup.request(model, p, None, gen(turn2, num_predict=4)))
        assert third.stats.prompt_tokens - third.stats.prompt_cached < 30


async def test_json_schema_constrains_the_output(tmp_path: Path, model: LocalModel) -> None:
    p = params(model)
    prompt = chat("Describe a person as JSON with a name and an age.")
    async with Supervisor.open(llama_settings(tmp_path), spawn=llama_spawner()) as sup:
        text, done = await collect(
            sup.request(
                model, p, None, gen(prompt, num_predict=200, json_schema=json.dumps(PERSON))
            )
        )
        assert done.reason == "stop"
        value = json.loads(text)
        assert isinstance(value, dict)
        assert isinstance(value["name"], str)
        assert len(value["name"]) <= 12
        assert isinstance(value["age"], int)
        with pytest.raises(InvalidRequestError, match="invalid JSON schema"):
            await collect(sup.request(model, p, None, gen(prompt, json_schema="{not json")))
        with pytest.raises(InvalidRequestError, match="invalid JSON schema"):
            await collect(sup.request(model, p, None, gen(prompt, json_schema='{"properties": 5}')))


async def test_embeddings_between_generations_reuse_the_runner(
    tmp_path: Path, model: LocalModel
) -> None:
    spawn = llama_spawner()
    p = params(model, n_ctx=256)
    prompt = chat(QUESTIONS[0])

    def embed(*inputs: str, **kw: Any) -> Callable[[int], Embed]:
        return lambda i: Embed(id=i, inputs=inputs, **kw)

    async def vectors(factory: Callable[[int], Embed]) -> Embeddings:
        got = None
        async for batch in sup.request(model, p, None, factory):
            got = next((m for m in batch if isinstance(m, Embeddings)), got)
        assert got is not None
        return got

    async with Supervisor.open(llama_settings(tmp_path), spawn=spawn) as sup:
        before, _ = await collect(sup.request(model, p, None, gen(prompt, num_predict=16)))
        out = await vectors(embed("The cat sat on the mat.", "Paris is in France."))
        assert len(out.vectors) == 2
        assert len(out.vectors[0]) == 576  # SmolLM2-135M's n_embd
        for vec in out.vectors:
            assert math.isclose(math.fsum(v * v for v in vec), 1.0, rel_tol=1e-4)
        assert out.vectors[0] != out.vectors[1]
        assert out.prompt_tokens > 10
        again = await vectors(embed("The cat sat on the mat."))
        assert again.vectors[0] == pytest.approx(out.vectors[0], abs=1e-5)
        after, _ = await collect(sup.request(model, p, None, gen(prompt, num_predict=16)))
        assert after == before
        long_text = "word " * 400
        cut = await vectors(embed(long_text))
        assert cut.prompt_tokens == 256
        with pytest.raises(InvalidRequestError, match="exceeds the context length"):
            await vectors(embed(long_text, truncate=False))
        assert len(spawn.runners) == 1


async def test_an_embed_batch_shares_the_runner_with_a_chat_and_stops_when_cancelled(
    tmp_path: Path, model: LocalModel
) -> None:
    p = params(model, n_ctx=256)
    inputs = tuple(f"Sentence number {i} is about the sea." for i in range(400))
    prompt = chat(QUESTIONS[1])

    def embed(n: int) -> Callable[[int], Embed]:
        return lambda i: Embed(id=i, inputs=inputs[:n])

    async with Supervisor.open(llama_settings(tmp_path), spawn=llama_spawner()) as sup:
        lone_answer, _ = await collect(sup.request(model, p, None, gen(prompt, num_predict=8)))
        # The first 64 inputs alone fill the same first decode as the 400 beside a chat do
        # (a packed decode's shape picks ggml's kernels, so only the same packing is exact).
        lone = [v async for b in sup.request(model, p, None, embed(64)) for v in vectors(b)][:3]
        async with leased(sup, model, p) as loaded:
            client = loaded.runner.client
            big = client.open(embed(400))
            first = await big.next_batch()  # its first vectors: it runs
            answer = await drain(client.open(gen(prompt, num_predict=8)))
            assert not big.finished  # the chat ran while the batch went on
            client.writer.write(Cancel(id=big.id))
            rest = await drain(big)
        assert "".join(m.text for m in answer if isinstance(m, Tokens)) == lone_answer
        got = [v for msg in first + rest if isinstance(msg, Embeddings) for v in msg.vectors]
        assert got[:3] == lone  # the same vectors alone and beside a generation
        assert len(got) < 400
        done = rest[-1]
        assert isinstance(done, Done)
        assert done.reason == "cancel"


def vectors(batch: list[Any]) -> list[tuple[float, ...]]:
    return [v for msg in batch if isinstance(msg, Embeddings) for v in msg.vectors]


async def test_a_copied_prefix_answers_as_the_same_prefix_in_its_own_slot(
    tmp_path: Path, model: LocalModel
) -> None:
    # The same first conversation in two fresh runners, then a second one on its system prompt.
    # A short first answer leaves that slot to the second conversation, which cuts it back to
    # the shared prefix; a long one makes the second take an empty slot and copy the prefix.
    # Either way the prefix's cache holds the same bytes and the rest of the prompt is
    # evaluated alike, so the greedy answers must be equal, token for token.
    system = SYSTEM + " " + " ".join(f"Rule {i}: answer briefly and politely." for i in range(40))
    story = chat("Tell me a very long story.", system)
    p = params(model)
    answers = []
    for n, home in (2, "own"), (64, "copied"):
        async with Supervisor.open(llama_settings(tmp_path / home), spawn=llama_spawner()) as sup:
            first, done = await collect(sup.request(model, p, None, gen(story, num_predict=n)))
            assert done.stats.eval_tokens == n
            text, second = await collect(
                sup.request(model, p, None, gen(chat(QUESTIONS[1], system), num_predict=48))
            )
            assert second.stats.prompt_cached > 300
            answers.append((text, second.stats.prompt_cached))
            if home == "copied":  # the first conversation's 64-token answer is still cached
                turn2 = story + first + "<|im_end|>\n<|im_start|>user\nMore?"
                _, third = await collect(sup.request(model, p, None, gen(turn2, num_predict=4)))
                assert third.stats.prompt_tokens - third.stats.prompt_cached < 30
    assert answers[0] == answers[1]


async def test_a_prefix_a_busy_slot_holds_is_copied(tmp_path: Path, model: LocalModel) -> None:
    system = SYSTEM + " " + " ".join(f"Rule {i}: answer briefly and politely." for i in range(40))
    p = params(model)
    async with Supervisor.open(llama_settings(tmp_path), spawn=llama_spawner()) as sup:
        story = chat("Tell me a very long story.", system)
        busy = sup.request(model, p, None, gen(story, num_predict=128))
        head = await first_tokens(busy)
        text, copied = await collect(
            sup.request(model, p, None, gen(chat(QUESTIONS[1], system), num_predict=16))
        )
        assert copied.stats.prompt_cached > 300  # the system prompt, from the busy slot
        assert copied.stats.prompt_tokens - copied.stats.prompt_cached < 30
        assert text.strip()
        events: list[Any] = [head]
        async for batch in busy:
            events.append(batch)
        done = [m for batch in events for m in batch if isinstance(m, Done)]
        # the donor was busy all along (no shorter answer freed its slot), and went on to its end
        assert [d.stats.eval_tokens for d in done] == [128]
