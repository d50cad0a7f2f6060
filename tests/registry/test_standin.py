"""A local aiohttp server stands in for hf.co, a token-auth registry with blob storage behind a
redirect, and plain https file hosts: Bearer flow, redirects, HF names, URL pulls with resume,
and the catalog's fallback order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

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

TOKEN = "tok-123"


class StandIn:
    def __init__(self, port: int, gguf: bytes) -> None:
        self.port = port
        self.gguf = gguf
        self.config = b'{"model_format":"gguf","model_family":"llama","file_type":"F16"}'
        self.blobs = {sha256(gguf): gguf, sha256(self.config): self.config}
        self.manifest = ollama_manifest(self.config, [(MODEL_TYPE, gguf)])
        self.repos: set[str] = {"ns/m", "bartowski/Tiny-GGUF"}
        self.token_queries: list[dict[str, str]] = []
        self.storage_auth: list[str | None] = []
        self.ranges: list[str] = []
        self.drop_after = 0  # the next file GET sends this many bytes, then drops

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _authorized(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            challenge = (
                f'Bearer realm="{self.url}/token",service="standin",'
                f'scope="repository:{request.match_info["ns"]}/{request.match_info["m"]}:pull"'
            )
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": challenge})

    async def token(self, request: web.Request) -> web.Response:
        self.token_queries.append(dict(request.query))
        return web.json_response({"token": TOKEN})

    async def manifest_get(self, request: web.Request) -> web.Response:
        self._authorized(request)
        if f"{request.match_info['ns']}/{request.match_info['m']}" not in self.repos:
            raise web.HTTPNotFound()
        return web.Response(body=self.manifest, content_type=MANIFEST_TYPE)

    async def blob_get(self, request: web.Request) -> web.Response:
        self._authorized(request)
        digest = request.match_info["digest"]
        raise web.HTTPTemporaryRedirect(f"http://localhost:{self.port}/storage/{digest}")

    async def storage(self, request: web.Request) -> web.StreamResponse:
        self.storage_auth.append(request.headers.get("Authorization"))
        return ranged_response(request, self.blobs[request.match_info["digest"]])

    async def file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["name"] != "tiny.gguf":
            raise web.HTTPNotFound()
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(len(self.gguf))})
        self.ranges.append(request.headers.get("Range", ""))
        if self.drop_after:
            cut, self.drop_after = self.drop_after, 0
            resp = web.StreamResponse(status=200, headers={"Content-Length": str(len(self.gguf))})
            await resp.prepare(request)
            await resp.write(self.gguf[:cut])
            assert request.transport is not None
            request.transport.close()
            return resp
        return ranged_response(request, self.gguf)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self.token)
        app.router.add_get("/v2/{ns}/{m}/manifests/{tag}", self.manifest_get)
        app.router.add_get("/v2/{ns}/{m}/blobs/{digest}", self.blob_get)
        app.router.add_get("/storage/{digest}", self.storage)
        app.router.add_get("/files/{name}", self.file)
        return app


@pytest.fixture
async def standin(tiny_gguf: bytes) -> AsyncIterator[StandIn]:
    server = StandIn(free_port(), tiny_gguf)
    async with serve_app(server.app(), server.port):
        yield server


async def test_bearer_token_and_redirect_to_storage(standin: StandIn, tmp_path: Path) -> None:
    svc = make_service(tmp_path)
    events = await collect_progress(pull(svc, f"127.0.0.1:{standin.port}/ns/m:q8", insecure=True))
    assert events[-1] == {"status": "success"}
    assert standin.token_queries[0]["service"] == "standin"
    assert standin.token_queries[0]["scope"] == "repository:ns/m:pull"
    assert standin.storage_auth
    assert not any(standin.storage_auth)  # no token sent to storage
    assert svc.store.read_blob(sha256(standin.gguf)) == standin.gguf


async def test_hugging_face_name(standin: StandIn, tmp_path: Path) -> None:
    svc = make_service(tmp_path, hosts={"hf.co": standin.url})
    events = await collect_progress(pull(svc, "hf.co/bartowski/Tiny-GGUF:Q8_0", insecure=False))
    assert events[-1] == {"status": "success"}
    assert [n.full for n in svc.store.names()] == ["hf.co/bartowski/Tiny-GGUF:Q8_0"]


async def test_url_pull_resumes(standin: StandIn, tmp_path: Path) -> None:
    svc = make_service(tmp_path, max_tries=1)
    url = f"{standin.url}/files/tiny.gguf"
    with pytest.raises(RegistryError, match="insecure protocol http"):
        await collect_progress(pull(svc, url, insecure=False))
    standin.drop_after = 600_000
    with pytest.raises(RegistryError):
        await collect_progress(pull(svc, url, insecure=True))
    assert list(svc.store.blobs_dir.glob("url-*-partial*"))
    events = await collect_progress(pull(svc, url, insecure=True))
    assert events[-1] == {"status": "success"}
    resumed = standin.ranges[-1]
    assert resumed.startswith("bytes=")
    assert int(resumed[6:].split("-")[0]) >= 500_000
    assert [n.display for n in svc.store.names()] == ["tiny:latest"]
    assert svc.store.read_blob(sha256(standin.gguf)) == standin.gguf
    assert not list(svc.store.blobs_dir.glob("*partial*"))


async def test_catalog_fallback_in_order(standin: StandIn, tmp_path: Path) -> None:
    catalog = {
        "tiny:latest": [
            "hf.co/nobody/missing:Q4_K_M",  # the stand-in answers 404
            f"{standin.url}/files/tiny.gguf",
            "hf.co/bartowski/Tiny-GGUF:Q8_0",  # never reached
        ]
    }
    hosts = {"registry.ollama.ai": f"http://127.0.0.1:{free_port()}", "hf.co": standin.url}
    svc = make_service(tmp_path, hosts=hosts, catalog=catalog)
    events = await collect_progress(pull(svc, "tiny", insecure=True))
    assert events[-1] == {"status": "success"}
    assert standin.ranges  # the URL source served it
    assert [n.display for n in svc.store.names()] == ["tiny:latest"]

    with pytest.raises(RegistryError, match=r"^pull model manifest: "):
        await collect_progress(pull(svc, "not-in-catalog", insecure=True))


async def test_catalog_all_sources_fail(standin: StandIn, tmp_path: Path) -> None:
    hosts = {"registry.ollama.ai": f"http://127.0.0.1:{free_port()}", "hf.co": standin.url}
    catalog = {"tiny:latest": ["hf.co/nobody/missing:Q4_K_M"]}
    svc = make_service(tmp_path, hosts=hosts, catalog=catalog)
    with pytest.raises(RegistryError, match=r"hf\.co/nobody/missing:Q4_K_M: pull model manifest"):
        await collect_progress(pull(svc, "tiny", insecure=True))
    assert list(svc.store.names()) == []


def test_builtin_catalog() -> None:
    from power.registry.catalog import catalog_sources, load_catalog
    from power.store.names import parse_name

    catalog = load_catalog()
    assert catalog_sources(catalog, parse_name("llama3.2"))[0].startswith("hf.co/")
    assert catalog_sources(catalog, parse_name("example.com/library/llama3.2")) == []
