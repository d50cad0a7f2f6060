"""Pull-through: which registry a fleet's pull-through asks for a name (``source_of``), and
first requests for a model that outnumber the event loop's default executor threads."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from aiohttp import web
from starlette.datastructures import State

from power.api.semantics import lookup_model
from power.registry import RegistryService
from power.registry.through import PullThrough
from power.store.manifest import MEDIA_TYPE_TEMPLATE
from power.store.names import ModelName
from power.store.store import ModelStore
from tests.support.net import free_port
from tests.support.registry import (
    MANIFEST_TYPE,
    MODEL_TYPE,
    make_service,
    ollama_manifest,
    ranged_response,
    sha256,
)
from tests.support.synth import write_llama_gguf

T = TypeVar("T")

NAMESPACE = "fleet"
EXECUTOR_THREADS = 2  # the loop's default executor: min(32, CPUs + 4) threads in a daemon
LOOKUPS = 8  # first requests at once: more than those threads
WITHIN_S = 20.0  # a deadlock shows as lookups still waiting after this (the pull: <1 s)


@pytest.mark.anyio
async def test_names_map_onto_the_model_source_and_no_other_host(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    through = PullThrough(make_service(tmp_path), "reg.lan:5000", "team", insecure=True, loop=loop)

    def source(name: str) -> str | None:
        found = through.source_of(ModelName.parse(name))
        return None if found is None else found.full

    assert source("smollm2") == "reg.lan:5000/team/smollm2:latest"
    assert source("Qwen3:8B") == "reg.lan:5000/team/Qwen3:8B"
    assert source("alice/tool:1b") == "reg.lan:5000/alice/tool:1b"
    assert source("REG.lan:5000/other/m:2") == "REG.lan:5000/other/m:2"
    assert source("hf.co/bartowski/x:Q4_K_M") is None
    assert source("registry.ollama.ai/library/smollm2") == "reg.lan:5000/team/smollm2:latest"


class Source:
    """The fleet's registry, served by aiohttp on loopback: one model, ``fleet/tiny:latest``,
    in Ollama's manifest format; ranged blob GETs as a distribution registry answers them."""

    def __init__(self, gguf: bytes, *, split_manifest: bool = False) -> None:
        self.port = free_port()
        self.split_manifest = split_manifest  # its manifest arrives in two parts, 50 ms apart
        config = json.dumps({"model_format": "gguf", "model_family": "llama"}).encode()
        template = b"{{ .Prompt }}"
        self.blobs = {sha256(b): b for b in (gguf, config, template)}
        self.manifest = ollama_manifest(
            config, [(MODEL_TYPE, gguf), (MEDIA_TYPE_TEMPLATE, template)]
        )
        self.manifest_gets = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def manifest_get(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["repo"] != f"{NAMESPACE}/tiny" or request.match_info["tag"] != (
            "latest"
        ):
            raise web.HTTPNotFound()
        self.manifest_gets += 1
        if not self.split_manifest:
            return web.Response(body=self.manifest, content_type=MANIFEST_TYPE)
        resp = web.StreamResponse(headers={"Content-Type": MANIFEST_TYPE})
        resp.content_length = len(self.manifest)
        await resp.prepare(request)
        half = len(self.manifest) // 2
        await resp.write(self.manifest[:half])
        await asyncio.sleep(0.05)
        await resp.write(self.manifest[half:])
        await resp.write_eof()
        return resp

    async def blob_get(self, request: web.Request) -> web.Response:
        data = self.blobs.get(request.match_info["digest"])
        if data is None:
            raise web.HTTPNotFound()
        return ranged_response(request, data)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/{repo:.+}/manifests/{tag}", self.manifest_get)
        app.router.add_get("/v2/{repo:.+}/blobs/{digest}", self.blob_get)
        return app


def run_with_executor_threads(threads: int, main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main`` on a fresh loop whose default executor has ``threads`` threads. Whatever
    it leaves stuck is let go before the loop closes, so a deadlock fails instead of hanging."""
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(threads, thread_name_prefix="default-executor")
    loop.set_default_executor(executor)
    try:
        return loop.run_until_complete(main())
    finally:
        executor.shutdown(wait=False, cancel_futures=True)  # queued lookups never start
        if left := asyncio.all_tasks(loop):
            for task in left:  # threads waiting on a pull are released when it is cancelled
                task.cancel()
            loop.run_until_complete(asyncio.wait(left))
        loop.close()  # a straggler's hook now finds the loop closed and gives up
        executor.shutdown(wait=True)


@contextlib.asynccontextmanager
async def daemon_of(source: Source, tmp_path: Path) -> AsyncIterator[State]:
    """``source`` served on loopback, and a daemon's state whose store pulls through from it
    (as ``serve.py`` wires them)."""
    runner = web.AppRunner(source.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", source.port).start()
    through: list[PullThrough] = []
    store = ModelStore(
        tmp_path / "models", on_missing=lambda s, n: any(pull(s, n) for pull in through)
    )
    svc = RegistryService(store, home=tmp_path / "home", env={}, catalog={})
    loop = asyncio.get_running_loop()
    pulling = PullThrough(svc, source.host, NAMESPACE, insecure=True, loop=loop)
    through.append(pulling)
    try:
        yield State({"store": store})
    finally:
        await pulling.aclose()
        await svc.aclose()
        await runner.cleanup()


@pytest.mark.timeout(60)  # a hang the harness cannot undo fails too
def test_first_requests_outnumbering_the_executor_threads_share_one_pull(tmp_path: Path) -> None:
    """More first lookups than the loop's default executor has threads: the pull's own
    blocking work on that executor must still get done (lookups once ran there and parked a
    thread each until the pull ended, so they took it all; now none waits on a thread)."""
    source = Source(write_llama_gguf(tmp_path / "tiny.gguf", dtype="f16").read_bytes())

    async def main() -> list[str]:
        async with daemon_of(source, tmp_path) as state:
            lookups = [lookup_model(state, "tiny") for _ in range(LOOKUPS)]
            try:
                models = await asyncio.wait_for(asyncio.gather(*lookups), WITHIN_S)
            except TimeoutError:
                pytest.fail(f"{LOOKUPS} first lookups still wait for the pull: a deadlock")
            # later lookups find it in the store, and the executor is free for them
            again = await asyncio.wait_for(lookup_model(state, "tiny:latest"), WITHIN_S)
            return [m.name for m in [*models, again]]

    names = run_with_executor_threads(EXECUTOR_THREADS, main)
    assert names == ["tiny:latest"] * (LOOKUPS + 1)
    assert source.manifest_gets == 1  # one pull for all of them


@pytest.mark.timeout(60)
def test_a_manifest_that_arrives_in_parts_is_read_whole(tmp_path: Path) -> None:
    source = Source(
        write_llama_gguf(tmp_path / "tiny.gguf", dtype="f16").read_bytes(), split_manifest=True
    )

    async def main() -> str:
        async with daemon_of(source, tmp_path) as state:
            return (await lookup_model(state, "tiny")).name

    assert run_with_executor_threads(4, main) == "tiny:latest"
