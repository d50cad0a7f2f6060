"""A real CNCF distribution registry (Debian's ``docker-registry``) on a free loopback port,
and the power side of registry tests: a ``RegistryService`` on a private store.

``run_registry`` is anonymous by default; with ``auth`` it wants basic credentials (htpasswd),
with ``tokens`` Bearer tokens from a realm (``tests.support.token_realm``) that the test serves.
Models are published in Ollama's manifest format through the registry's own OCI upload API.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from power.create.build import create_model
from power.registry import RegistryService
from power.store.store import ModelStore
from tests.support.net import free_port
from tests.support.token_realm import TokenIssuer
from tests.support.wait import wait_until

__all__ = [
    "CONFIG_TYPE",
    "MANIFEST_TYPE",
    "MODEL_TYPE",
    "PASSWORD",
    "USER",
    "Registry",
    "collect_progress",
    "local_model",
    "make_service",
    "publish_tiny",
    "run_registry",
    "serve_app",
    "sha256",
]

START_TIMEOUT_S = 20.0

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_TYPE = "application/vnd.ollama.image.model"
USER, PASSWORD = "alice", "s3cret-pw"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Registry:
    proc: subprocess.Popen[bytes]
    port: int
    root: Path
    log: Path
    auth: tuple[str, str] | None = None
    tokens: TokenIssuer | None = None
    published: dict[str, bytes] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def client(self, repo: str = "") -> httpx.Client:
        headers = {}
        if self.tokens is not None:
            headers["Authorization"] = f"Bearer {self.tokens.full_access(repo)}"
        return httpx.Client(base_url=self.url, auth=self.auth, headers=headers, timeout=60)

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        with self.client(repo) as c:
            if c.head(f"/v2/{repo}/blobs/{digest}").status_code == 200:
                return digest
            start = c.post(f"/v2/{repo}/blobs/uploads/")
            assert start.status_code == 202, start.text
            loc = start.headers["Location"]
            sep = "&" if "?" in loc else "?"
            done = c.put(f"{loc}{sep}digest={digest}", content=data)
            assert done.status_code == 201, done.text
        return digest

    def publish(
        self,
        repo: str,
        tag: str,
        layers: list[tuple[str, bytes]],
        config: dict[str, object] | None = None,
    ) -> bytes:
        """Upload blobs and an Ollama-style manifest; returns the manifest bytes."""
        entries = []
        for media_type, data in layers:
            entries.append(
                {"mediaType": media_type, "digest": self.push_blob(repo, data), "size": len(data)}
            )
        cfg = json.dumps(
            config
            or {
                "model_format": "gguf",
                "model_family": "llama",
                "model_families": ["llama"],
                "model_type": "1M",
                "file_type": "F16",
                "architecture": "amd64",
                "os": "linux",
            },
            separators=(",", ":"),
        ).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": CONFIG_TYPE,
                "digest": self.push_blob(repo, cfg),
                "size": len(cfg),
            },
            "layers": entries,
        }
        raw = json.dumps(manifest, separators=(",", ":")).encode()
        with self.client(repo) as c:
            r = c.put(
                f"/v2/{repo}/manifests/{tag}", content=raw, headers={"Content-Type": MANIFEST_TYPE}
            )
            assert r.status_code == 201, r.text
        self.published[f"{repo}:{tag}"] = raw
        return raw

    def blob_file(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/", timeout=1).status_code in (200, 401)
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def run_registry(
    tmp: Path, *, auth: bool = False, tokens: TokenIssuer | None = None, accesslog: bool = False
) -> Iterator[Registry]:
    """The registry, once it answers; with ``accesslog`` its log has a line per request
    (combined log format: the path, status and bytes sent)."""
    if not Path(REGISTRY_BIN).exists():
        pytest.fail("docker-registry is missing: apt-get install -y docker-registry apache2-utils")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    root = tmp / "storage"
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        f"    disabled: {'false' if accesslog else 'true'}",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {root}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
    ]
    if auth:
        htpasswd = subprocess.run(
            ["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, check=True, text=True
        ).stdout
        (tmp / "htpasswd").write_text(htpasswd)
        lines += ["auth:", "  htpasswd:", "    realm: test", f"    path: {tmp / 'htpasswd'}"]
    if tokens is not None:
        lines += tokens.registry_config()
    (tmp / "config.yml").write_text("\n".join(lines) + "\n")
    log = tmp / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(tmp / "config.yml")],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    reg = Registry(proc, port, root, log, auth=(USER, PASSWORD) if auth else None, tokens=tokens)
    try:
        try:
            wait_until(lambda: proc.poll() is not None or _ready(reg.url), START_TIMEOUT_S, 0.05)
        except AssertionError:
            raise AssertionError(f"registry did not start:\n{log.read_text()}") from None
        if proc.poll() is not None:
            raise AssertionError(f"registry did not start:\n{log.read_text()}")
        yield reg
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def publish_tiny(
    reg: Registry, data: bytes, repo: str = "library/tiny", tag: str = "latest"
) -> bytes:
    layers = [
        (MODEL_TYPE, data),
        ("application/vnd.ollama.image.template", b"{{ .Prompt }}"),
        ("application/vnd.ollama.image.params", b'{"temperature":0.5}\n'),
        ("application/vnd.ollama.image.license", b"MIT-ish test license"),
    ]
    return reg.publish(repo, tag, layers)


def make_service(tmp_path: Path, **kw: Any) -> RegistryService:
    """The registry service of a power server whose store is ``tmp_path / "models"``."""
    store = ModelStore(tmp_path / "models")
    kw.setdefault("catalog", {})
    return RegistryService(store, home=tmp_path / "home", env={}, **kw)


async def collect_progress(progress: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every progress line of a pull or push (a failure raises)."""
    return [p async for p in progress]


def local_model(store: ModelStore, gguf: bytes, name: str) -> bytes:
    """Create ``name`` from ``gguf`` in ``store``; returns its manifest."""
    digest = store.add_blob_bytes(gguf)
    req = {"files": {"tiny.gguf": digest}, "system": "be brief", "parameters": {"top_k": 7}}
    list(create_model(store, name, req))
    return store.read_manifest_bytes(name)


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, port: int) -> AsyncIterator[None]:
    """``app`` (a stand-in registry or file host) on ``127.0.0.1:port`` until the block ends."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield
    finally:
        await runner.cleanup()


def ranged_response(request: web.Request, data: bytes) -> web.Response:
    """``data`` as a registry serves a blob: the ``Range`` asked for (206), or whole."""
    rng = request.http_range
    start, stop = rng.start or 0, rng.stop if rng.stop is not None else len(data)
    status = 206 if request.headers.get("Range") else 200
    return web.Response(body=data[start:stop], status=status)


def ollama_manifest(config: bytes, layers: list[tuple[str, bytes]]) -> bytes:
    """An Ollama-format manifest naming ``config`` and ``layers`` (media type, data) by digest,
    as a stand-in registry serves it."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": sha256(config), "size": len(config)},
            "layers": [
                {"mediaType": kind, "digest": sha256(data), "size": len(data)}
                for kind, data in layers
            ],
        }
    ).encode()
