"""The real Supervisor with real ``python -m runner --engine fake:…`` children."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from power.errors import (
    InvalidRequestError,
    RunnerCrashedError,
    RunnerLoadError,
    RunnerTimeoutError,
)
from power.supervisor import Supervisor
from power.supervisor.memory import MachineMemory
from proto import Done, Generate, LoadParams, Tokens
from tests.support.spawn import Spawner, alive, collect, gen, model, params, settings
from tests.support.wait import wait_for

pytestmark = pytest.mark.anyio


async def kill_on_first_token(events: AsyncIterator[list[Any]], spawn: Spawner) -> None:
    async for batch in events:
        if any(isinstance(x, Tokens) for x in batch):
            os.kill(spawn.pids[0], signal.SIGKILL)


async def test_stream_and_prefix_cache(tmp_path: Path) -> None:
    spawn = Spawner("fake:echo")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        text, done = await collect(sup.request(m, params(m), None, gen("hello there world")))
        assert text == "hello there world "
        assert done.reason == "stop"
        assert done.stats.eval_tokens == 3
        _, again = await collect(sup.request(m, params(m), None, gen("hello there friend")))
        assert again.stats.prompt_cached == 3  # BOS, "hello", "there"
        assert spawn.count == 1
        pid = spawn.pids[0]
    assert not alive(pid)


async def test_num_predict_and_stop_strings(tmp_path: Path) -> None:
    spawn = Spawner("fake:count")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        text, done = await collect(sup.request(m, params(m), None, gen("go", num_predict=5)))
        assert (text, done.reason, done.stop) == ("1 2 3 4 5 ", "length", "")
        stops = ("9", "4", " 3")
        text, done = await collect(sup.request(m, params(m), None, gen("go", stop=stops)))
        assert (text, done.reason, done.stop) == ("1 2", "stop", " 3")


async def test_cancel_mid_stream_stops_the_runner_promptly(tmp_path: Path) -> None:
    spawn = Spawner("fake:count?delay=0.02")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        events = sup.request(m, params(m), None, gen("go"))
        seen = 0
        async for batch in events:
            seen += sum(isinstance(x, Tokens) for x in batch)
            if seen >= 3:
                break
        await events.aclose()  # type: ignore[attr-defined]
        slot = sup.loaded()[0]
        assert slot.refcount == 0
        # The runner is free again: a new request is served at once, not after an endless count.
        text, _done = await collect(sup.request(m, params(m), None, gen("go", num_predict=2)))
        assert text == "1 2 "


async def test_crash_mid_stream_reports_stderr_and_next_request_gets_a_fresh_runner(
    tmp_path: Path,
) -> None:
    spawn = Spawner("fake:count?crash_after=3&delay=0.02", "fake:count")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        with pytest.raises(RunnerCrashedError) as info:
            await collect(sup.request(m, params(m), None, gen("go", num_predict=50)))
        assert "crash after 3 tokens" in str(info.value)
        assert info.value.pid == spawn.pids[0]
        await wait_for(lambda: not sup.loaded())
        text, _ = await collect(sup.request(m, params(m), None, gen("go", num_predict=2)))
        assert text == "1 2 "
        assert spawn.count == 2


async def test_kill_9_mid_stream_is_reported_as_possibly_out_of_memory(tmp_path: Path) -> None:
    spawn = Spawner("fake:count?delay=0.02")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        events = sup.request(m, params(m), None, gen("go"))
        with pytest.raises(RunnerCrashedError, match=r"SIGKILL.*out of memory"):
            await kill_on_first_token(events, spawn)


async def test_a_load_failure_is_not_retried(tmp_path: Path) -> None:
    spawn = Spawner("fake:echo?fail_load=1")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        with pytest.raises(RunnerLoadError, match="fail_load"):
            await collect(sup.request(m, params(m), None, gen("hi")))
        assert spawn.count == 1
        assert not sup.loaded()


async def test_a_hung_runner_is_detected_by_ping_and_killed(tmp_path: Path) -> None:
    spawn = Spawner("fake:echo?hang=1")
    m = model(tmp_path)
    cfg = settings(tmp_path, ping_interval_s=0.2, ping_timeout_s=0.5)
    async with Supervisor.open(cfg, spawn=spawn) as sup:
        with pytest.raises(RunnerTimeoutError, match="stopped responding"):
            await collect(sup.request(m, params(m), None, gen("hi")))
        await wait_for(lambda: not alive(spawn.pids[0]))


async def test_keep_alive_expiry_unloads_an_idle_runner(tmp_path: Path) -> None:
    spawn = Spawner("fake:echo")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        await collect(sup.request(m, params(m), 0.3, gen("hi")))
        assert sup.loaded()
        await wait_for(lambda: not sup.loaded() and not alive(spawn.pids[0]))


async def test_keep_alive_zero_unloads_right_after_the_request(tmp_path: Path) -> None:
    spawn = Spawner("fake:echo")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        await collect(sup.request(m, params(m), 0.0, gen("hi")))
        await wait_for(lambda: not alive(spawn.pids[0]))


async def test_eviction_at_max_loaded_models_never_takes_a_busy_runner(tmp_path: Path) -> None:
    spawn = Spawner("fake:count?delay=0.01")
    a, b = model(tmp_path, "a"), model(tmp_path, "b")
    probes: list[MachineMemory] = []  # one per placement attempt

    def probe() -> MachineMemory:
        probes.append(MachineMemory(available_ram=64 * 2**30))
        return probes[-1]

    cfg = settings(tmp_path, max_loaded_models=1)
    async with Supervisor.open(cfg, spawn=spawn, memory_probe=probe) as sup:
        busy = sup.request(a, params(a), None, gen("go", num_predict=40))
        first = await anext(busy)  # a is now generating
        assert first
        load_b = asyncio.ensure_future(
            collect(sup.request(b, params(b), None, gen("x", num_predict=1)))
        )
        # b waits in admission and has looked for room (the first probe placed a)
        await wait_for(lambda: sup.status().queue_depth == 1 and len(probes) >= 2)
        assert not load_b.done()
        assert spawn.count == 1
        rest = await collect(busy)
        assert rest[1].reason == "length"
        text, _ = await load_b  # a became idle, was evicted, b loaded
        assert text == "1 "
        assert spawn.count == 2
        assert [s.model.name for s in sup.loaded()] == ["b:latest"]
        assert not alive(spawn.pids[0])


async def test_concurrent_cold_requests_load_the_model_once(tmp_path: Path) -> None:
    spawn = Spawner("fake:echo?load_delay=0.3")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        results = await asyncio.gather(
            collect(sup.request(m, params(m), None, gen("one"))),
            collect(sup.request(m, params(m), None, gen("two"))),
        )
        assert sorted(r[0] for r in results) == ["one ", "two "]
        assert spawn.count == 1


async def test_a_prompt_too_long_without_shift_is_a_bad_request(tmp_path: Path) -> None:
    spawn = Spawner("fake:echo")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        p = LoadParams(model_path=m.model_path, n_ctx=4)
        with pytest.raises(InvalidRequestError, match="longer than the context"):
            await collect(sup.request(m, p, None, gen("a b c d e f", shift=False)))
        assert sup.loaded()  # the runner survived


async def test_shutdown_stops_every_runner(tmp_path: Path) -> None:
    spawn = Spawner("fake:echo")
    a, b = model(tmp_path, "a"), model(tmp_path, "b")
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        await collect(sup.request(a, params(a), float("inf"), gen("x")))
        await collect(sup.request(b, params(b), float("inf"), gen("y")))
        assert len(sup.loaded()) == 2
    assert spawn.count == 2
    assert not any(alive(p) for p in spawn.pids)


async def _log_stream(
    name: str, events: AsyncIterator[list[Any]], log: list[tuple[str, str]]
) -> str:
    text = []
    async for batch in events:
        for msg in batch:
            if isinstance(msg, Tokens):
                text.append(msg.text)
                log.append((name, "tokens"))
            elif isinstance(msg, Done):
                log.append((name, msg.reason))
    return "".join(text)


async def _log_raw(name: str, stream: Any, log: list[tuple[str, str]]) -> str:
    async def events() -> AsyncIterator[list[Any]]:
        while not stream.finished:
            yield await stream.next_batch()

    try:
        return await _log_stream(name, events(), log)
    finally:
        stream.close()


async def test_parallel_sequences_interleave_in_one_runner(tmp_path: Path) -> None:
    spawn = Spawner("fake:count?delay=0.02")
    m = model(tmp_path)
    p = LoadParams(model_path=m.model_path, n_ctx=512, num_parallel=2)
    log: list[tuple[str, str]] = []
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        texts = await asyncio.gather(
            _log_stream("a", sup.request(m, p, None, gen("go", num_predict=8)), log),
            _log_stream("b", sup.request(m, p, None, gen("go", num_predict=8)), log),
        )
        assert list(texts) == ["1 2 3 4 5 6 7 8 "] * 2
        assert spawn.count == 1
    a_done, b_done = log.index(("a", "length")), log.index(("b", "length"))
    assert log.index(("b", "tokens")) < a_done  # b ran while a was still running
    assert log.index(("a", "tokens")) < b_done


async def test_requests_beyond_num_parallel_wait_in_fifo_order(tmp_path: Path) -> None:
    spawn = Spawner("fake:count?delay=0.02")
    m = model(tmp_path)
    p = LoadParams(model_path=m.model_path, n_ctx=512, num_parallel=2)
    log: list[tuple[str, str]] = []
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        await collect(sup.request(m, p, None, gen("warm", num_predict=1)))
        client = sup.loaded()[0].runner.client  # past the gateway's seats: the runner queues
        tasks = []
        for name, count in [("a", 20), ("b", 60), ("c", 4), ("d", 4)]:
            stream = client.open(lambda i, n=count: Generate(id=i, prompt="go", num_predict=n))  # type: ignore[misc]
            tasks.append(asyncio.ensure_future(_log_raw(name, stream, log)))
        texts = await asyncio.gather(*tasks)
        assert texts[2] == texts[3] == "1 2 3 4 "
    done = [name for name, what in log if what == "length"]
    assert done == ["a", "c", "d", "b"]
    assert log.index(("a", "length")) < log.index(("c", "tokens"))
    assert log.index(("c", "length")) < log.index(("d", "tokens"))


async def test_cancelling_a_queued_request_ends_it_at_once(tmp_path: Path) -> None:
    spawn = Spawner("fake:count?delay=0.02")
    m = model(tmp_path)
    p = LoadParams(model_path=m.model_path, n_ctx=512, num_parallel=1)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        busy = sup.request(m, p, None, gen("go", num_predict=200))
        assert await anext(busy)
        client = sup.loaded()[0].runner.client
        queued = client.open(lambda i: Generate(id=i, prompt="x", num_predict=3))
        client.cancel_nowait(queued.id)
        batch = await queued.next_batch()
        assert isinstance(batch[-1], Done)
        assert batch[-1].reason == "cancel"
        queued.close()
        await busy.aclose()  # type: ignore[attr-defined]
