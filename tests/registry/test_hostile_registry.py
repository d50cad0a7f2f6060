"""Registries that compress what they may, or answer without end: a stand-in aiohttp server.

A CDN in front of a registry compresses a response when the request says it accepts gzip
(aiohttp says so by default); power reads bodies as sent, so it must ask for ``identity``. An
error or a token response is read whole only up to a limit, so a server that never stops
sending cannot make the gateway buffer without bound.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from power.errors import RegistryError
from power.registry import pull
from tests.support.net import free_port
from tests.support.registry import (
    MANIFEST_TYPE,
    MODEL_TYPE,
    collect_progress,
    make_service,
    ollama_manifest,
    ranged_response,
    serve_app,
    sha256,
)

pytestmark = pytest.mark.anyio

TOKEN = "tok-456"
_CHUNK = b"x" * (1 << 20)


class Hostile:
    """Token auth, a manifest and blobs; ``mode`` picks how it misbehaves."""

    def __init__(self, port: int, gguf: bytes) -> None:
        self.port, self.mode = port, "compress"
        self.gguf = gguf
        config = b'{"model_format":"gguf","model_family":"llama","file_type":"F16"}'
        self.blobs = {sha256(gguf): gguf, sha256(config): config}
        self.manifest = ollama_manifest(config, [(MODEL_TYPE, gguf)])
        self.compressed: list[str] = []  # the paths it sent gzip-encoded
        self.sent = 0  # bytes of endless bodies written

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _reply(
        self, request: web.Request, body: bytes, content_type: str = "application/json"
    ) -> web.Response:
        """``body``, gzipped when the client accepts gzip: what nginx's ``gzip on`` does."""
        headers = {"Content-Type": content_type}
        if self.mode == "compress" and "gzip" in request.headers.get("Accept-Encoding", ""):
            self.compressed.append(request.path)
            body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
        return web.Response(body=body, headers=headers)

    async def _endless(self, request: web.Request, status: int) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            while self.sent < 64 * len(_CHUNK):  # far past any limit; the client leaves first
                await resp.write(_CHUNK)
                self.sent += len(_CHUNK)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up
        return resp

    async def token(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "endless-token":
            return await self._endless(request, 200)
        if self.mode == "garbled-token":
            return web.Response(body=b"\xff\xfe not json")
        return self._reply(request, b'{"token": "%s"}' % TOKEN.encode())

    async def manifest_get(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            challenge = f'Bearer realm="http://{self.host}/token",service="hostile"'
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": challenge})
        if self.mode == "endless-error":
            return await self._endless(request, 500)
        return self._reply(request, self.manifest, MANIFEST_TYPE)

    async def blob_get(self, request: web.Request) -> web.Response:
        data = self.blobs[request.match_info["digest"]]
        if request.headers.get("Range"):
            return ranged_response(request, data)
        return self._reply(request, data, "application/octet-stream")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self.token)
        app.router.add_get("/v2/{ns}/{m}/manifests/{tag}", self.manifest_get)
        app.router.add_get("/v2/{ns}/{m}/blobs/{digest}", self.blob_get)
        return app


@pytest.fixture
async def hostile(tiny_gguf: bytes) -> AsyncIterator[Hostile]:
    server = Hostile(free_port(), tiny_gguf)
    async with serve_app(server.app(), server.port):
        yield server


async def test_a_registry_that_compresses_when_asked_serves_the_bytes_as_stored(
    hostile: Hostile, tmp_path: Path
) -> None:
    svc = make_service(tmp_path)
    events = await collect_progress(pull(svc, f"{hostile.host}/ns/m", insecure=True))
    await svc.aclose()
    assert events[-1] == {"status": "success"}
    assert hostile.compressed == []  # never asked for gzip, so never sent it
    assert svc.store.read_blob(sha256(hostile.gguf)) == hostile.gguf


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("endless-error", "pull model manifest: 500: xxxxxxxx"),
        ("endless-token", "unauthorized: access denied"),
        ("garbled-token", "unauthorized: access denied"),
    ],
)
async def test_a_registry_that_sends_without_end_or_garbage_fails_the_pull(
    hostile: Hostile, tmp_path: Path, mode: str, error: str
) -> None:
    hostile.mode = mode
    svc = make_service(tmp_path)
    with anyio.fail_after(30):  # (reading the whole of an endless body would never end)
        with pytest.raises(RegistryError, match=error) as info:
            await collect_progress(pull(svc, f"{hostile.host}/ns/m", insecure=True))
    await svc.aclose()
    assert len(str(info.value)) < 600  # an error's text is its first bytes only
    assert hostile.sent < 16 * len(_CHUNK)  # the client stopped reading, and hung up
