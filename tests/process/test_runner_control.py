"""The runner's control path stays free: tokenizing and embedding never hold up pings, cancels or
other requests (the real Supervisor, ``python -m runner --engine fake:…`` children)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from power.errors import ClientStalledError, InvalidRequestError, RunnerCrashedError
from power.store.model import LocalModel
from power.supervisor import RequestStream, Supervisor
from proto import (
    MAX_TOKENIZE_BYTES,
    Cancel,
    Done,
    Embed,
    Embeddings,
    FromRunner,
    LoadParams,
    Msg,
    Tokenize,
    Tokenized,
    Tokens,
)
from tests.support.runners import leased
from tests.support.spawn import Spawner, collect, drain, gen, model, params, settings
from tests.support.wait import wait_for

pytestmark = pytest.mark.anyio


async def count(sup: Supervisor, m: LocalModel, text: str) -> int:
    """Tokens in ``text`` for model ``m`` (one Tokenize call)."""
    reply = await sup.call(m, params(m), None, lambda i: Tokenize(id=i, text=text))
    assert isinstance(reply, Tokenized)
    return len(reply.tokens)


def embed(n: int, **kw: Any) -> Callable[[int], Embed]:
    inputs = tuple(f"input number {i}" for i in range(n))
    return lambda i: Embed(id=i, inputs=inputs, **kw)


async def test_a_slow_tokenize_neither_starves_pings_nor_kills_a_concurrent_stream(
    tmp_path: Path,
) -> None:
    # Tokenizing a MiB takes this runner 3 s, six times the ping timeout.
    spawn = Spawner("fake:count?delay=0.005&tokenize_delay=3")
    m = model(tmp_path)
    cfg = settings(tmp_path, ping_interval_s=0.2, ping_timeout_s=0.5)
    text = "w " * (1 << 19)
    async with Supervisor.open(cfg, spawn=spawn) as sup:
        stream = asyncio.ensure_future(
            collect(sup.request(m, params(m), None, gen("go", num_predict=400)))
        )
        n = await count(sup, m, text)
        out, done = await stream
        assert n == 1 << 19
        assert done.reason == "length"
        assert out.split() == [str(i) for i in range(1, 401)]
        assert spawn.count == 1  # never killed as hung


async def test_text_over_the_tokenize_limit_is_a_bad_request_that_names_the_limit(
    tmp_path: Path,
) -> None:
    spawn = Spawner("fake:echo")
    m = model(tmp_path)
    big = "w" * (MAX_TOKENIZE_BYTES + 1)
    limit = f"limit of {MAX_TOKENIZE_BYTES >> 20} MiB"
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        with pytest.raises(InvalidRequestError, match=f"text to tokenize .* {limit}"):
            await count(sup, m, big)
        with pytest.raises(InvalidRequestError, match=f"the prompt .* {limit}"):
            await collect(sup.request(m, params(m), None, gen(big)))
        with pytest.raises(InvalidRequestError, match=f"input 1 .* {limit}"):
            await collect(sup.request(m, params(m), None, lambda i: Embed(id=i, inputs=("a", big))))
        text, _ = await collect(sup.request(m, params(m), None, gen("still here")))
        assert text == "still here "
        assert spawn.count == 1


async def test_an_embed_batch_interleaves_with_generation(tmp_path: Path) -> None:
    spawn = Spawner("fake:count?delay=0.005")
    m = model(tmp_path)
    p = LoadParams(model_path=m.model_path, n_ctx=512, num_parallel=2)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        alone = await drain_request(sup, m, p, embed(3))
        async with leased(sup, m, p) as loaded:
            client = loaded.runner.client
            big = client.open(embed(600))  # 3 s of embedding decodes
            chat = client.open(gen("go", num_predict=3))
            order: list[str] = []

            async def finish(name: str, stream: RequestStream) -> list[FromRunner]:
                out = await drain(stream)
                order.append(name)
                return out

            vectors, answer = await asyncio.gather(finish("embed", big), finish("chat", chat))
        assert order == ["chat", "embed"]
        assert "".join(m.text for m in answer if isinstance(m, Tokens)) == "1 2 3 "
        got = [v for msg in vectors if isinstance(msg, Embeddings) for v in msg.vectors]
        assert len(got) == 600
        assert got[:3] == [v for msg in alone if isinstance(msg, Embeddings) for v in msg.vectors]
        (done,) = [msg for msg in vectors if isinstance(msg, Done)]
        assert done.reason == "stop"
        assert done.stats.prompt_tokens == sum(len(f"input number {i}".split()) for i in range(600))


async def drain_request(
    sup: Supervisor, m: LocalModel, p: LoadParams, build: Callable[[int], Msg]
) -> list[Any]:
    out: list[Any] = []
    async for batch in sup.request(m, p, None, build):
        out.extend(batch)
    return out


async def test_a_cancelled_embed_stops_and_the_queued_chat_runs_next(tmp_path: Path) -> None:
    spawn = Spawner("fake:count?delay=0.01")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        async with leased(sup, m, params(m)) as loaded:  # one slot: the chat waits
            client = loaded.runner.client
            big = client.open(embed(2000))  # 20 s of embedding decodes
            replies = await big.next_batch()  # its first vectors: it is running
            assert isinstance(replies[0], Embeddings)
            chat = client.open(gen("go", num_predict=3))
            client.writer.write(Cancel(id=big.id))  # as the gateway does when its client goes
            replies += await drain(big)
            answer = await drain(chat)
        assert sum(len(msg.vectors) for msg in replies if isinstance(msg, Embeddings)) < 2000
        assert isinstance(replies[-1], Done)
        assert replies[-1].reason == "cancel"
        assert "".join(m.text for m in answer if isinstance(m, Tokens)) == "1 2 3 "


async def test_a_runner_killed_by_a_signal_leaves_the_python_stacks_of_its_threads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spawn = Spawner("fake:echo?kernel_fault=2")  # SIGSEGV in its first decode, in every mode
    m = model(tmp_path)
    caplog.set_level(logging.ERROR, logger="power.runner")
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        with pytest.raises(RunnerCrashedError) as err:
            await collect(sup.request(m, params(m), None, gen("hi")))
    message = str(err.value)
    assert "killed by SIGSEGV" in message
    assert "bad CPU kernel in mode plain" in message  # the runner's own last words stay
    assert "Fatal Python error: Segmentation fault" in message
    trace = "\n".join(err.value.trace)
    assert trace.count("(most recent call first):") >= 2  # every thread, not only the faulty one
    assert 'runner/fake.py", line' in trace
    assert "in decode" in trace  # where the inference thread was
    assert "in _run" in trace
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "power.runner")
    assert "Fatal Python error: Segmentation fault" in logged
    assert "in decode" in logged


async def read_into(texts: list[str], batches: AsyncIterator[list[FromRunner]]) -> None:
    async for batch in batches:
        texts.extend(t.text for t in batch if isinstance(t, Tokens))


async def test_a_stream_nobody_reads_stops_its_generation_at_the_backlog_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway holds a bounded backlog per stream: past it, the runner stops generating and
    the reader gets every token that came, in order, then the error."""
    spawn = Spawner("fake:count?delay=0.001")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        batches = sup.request(m, params(m), None, gen("go", num_predict=20_000))
        texts = [t.text for t in await anext(batches) if isinstance(t, Tokens)]
        (slot,) = sup.loaded()
        slot.runner.client.backlog_limit = 4096  # (a few hundred tokens instead of 16 MiB)
        await wait_for(lambda: "waited unread" in caplog.text)  # the reader has stalled
        # its seat (the runner's one sequence) is free while it still has not read what came
        out, done = await collect(sup.request(m, params(m), None, gen("go", num_predict=3)))
        assert (out.split(), done.reason) == (["1", "2", "3"], "length")
        assert spawn.count == 1
        with pytest.raises(ClientStalledError, match="stopped reading"):
            await read_into(texts, batches)
        numbers = [int(x) for x in "".join(texts).split()]
        assert numbers == list(range(1, len(numbers) + 1))  # nothing lost before the cut
        assert 50 < len(numbers) < 1_000


async def test_a_request_the_runner_finished_frees_its_seat_before_its_reader_is_done(
    tmp_path: Path,
) -> None:
    spawn = Spawner("fake:count?delay=0.001")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        batches = sup.request(m, params(m), None, gen("go", num_predict=50))
        texts = [t.text for t in await anext(batches) if isinstance(t, Tokens)]
        await wait_for(lambda: sup.loaded()[0].refcount == 0)  # its Done came, not yet read
        out, _ = await collect(sup.request(m, params(m), None, gen("go", num_predict=3)))
        assert out.split() == ["1", "2", "3"]
        await read_into(texts, batches)  # and all of it is still there, in order
        assert "".join(texts).split() == [str(i) for i in range(1, 51)]
