"""A pull that found blobs present keeps them until its manifest names them, even when the only
model that named them is deleted meanwhile (a registry served by aiohttp on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest
from aiohttp import web

from power.registry.pull import pull
from power.store.manifest import MEDIA_TYPE_LICENSE
from power.store.names import parse_name
from tests.support.net import free_port
from tests.support.registry import (
    MANIFEST_TYPE,
    MODEL_TYPE,
    collect_progress,
    make_service,
    ollama_manifest,
    ranged_response,
    sha256,
)
from tests.support.synth import write_llama_gguf

pytestmark = pytest.mark.anyio


@pytest.mark.timeout(60)
async def test_a_pull_keeps_the_blobs_it_found_present_when_their_model_is_deleted_meanwhile(
    tmp_path: Path,
) -> None:
    gguf = write_llama_gguf(tmp_path / "tiny.gguf", dtype="f16").read_bytes()
    config = json.dumps({"model_format": "gguf", "model_family": "llama"}).encode()
    license_ = b"a license only the second model has"
    manifests = {
        "first": ollama_manifest(config, [(MODEL_TYPE, gguf)]),
        "second": ollama_manifest(config, [(MODEL_TYPE, gguf), (MEDIA_TYPE_LICENSE, license_)]),
    }
    blobs = {sha256(b): b for b in (gguf, config, license_)}
    gate = asyncio.Event()  # holds the second model's new blob
    waiting = asyncio.Event()  # the second pull asked for it: it has seen the others present

    async def manifest_get(request: web.Request) -> web.Response:
        return web.Response(body=manifests[request.match_info["m"]], content_type=MANIFEST_TYPE)

    async def blob_get(request: web.Request) -> web.Response:
        digest = request.match_info["digest"]
        if digest == sha256(license_):
            waiting.set()
            await gate.wait()
        return ranged_response(request, blobs[digest])

    app = web.Application()
    app.router.add_get("/v2/team/{m}/manifests/{tag}", manifest_get)
    app.router.add_get("/v2/team/{m}/blobs/{digest}", blob_get)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    svc = make_service(tmp_path)
    store = svc.store
    try:
        await collect_progress(pull(svc, f"127.0.0.1:{port}/team/first", insecure=True))
        second = asyncio.ensure_future(
            collect_progress(pull(svc, f"127.0.0.1:{port}/team/second", insecure=True))
        )
        await asyncio.wait_for(waiting.wait(), 20)
        # the only model that names the blobs the second pull found present goes
        await asyncio.to_thread(store.delete, parse_name(f"127.0.0.1:{port}/team/first"))
        gate.set()
        await second
        model = store.get(f"127.0.0.1:{port}/team/second")
        assert await asyncio.to_thread(Path(model.model_path).read_bytes) == gguf
        assert store.has_blob(sha256(config))
    finally:
        gate.set()
        with contextlib.suppress(Exception):
            await svc.aclose()
        await runner.cleanup()
