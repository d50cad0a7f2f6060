"""Registry traffic honours ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY``, as Ollama's does.

A real ``power serve`` pulls from the real registry. The loopback proxy (`tests.registry.proxy`)
forwards to the registry whatever host a request names, so a pull from a host where nothing
listens succeeds only through the proxy; and a proxy where nothing listens is harmless only
when ``NO_PROXY`` exempts the registry.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.support.net import free_port
from tests.support.proxy import proxy
from tests.support.registry import Registry, publish_tiny
from tests.support.server import power_server


def pull(url: str, name: str) -> list[dict[str, object]]:
    body = {"model": name, "insecure": True}
    with httpx.stream("POST", f"{url}/api/pull", json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        return [json.loads(line) for line in r.iter_lines() if line]


def test_a_pull_goes_through_http_proxy(
    env: dict[str, str], registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    publish_tiny(registry, tiny_gguf)
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens here; only the proxy reaches it
    with proxy(registry.port) as p:
        proxied = dict(env, HTTP_PROXY=f"http://{p.host}")
        with power_server(proxied, tmp_path / "server.log") as server:
            out = pull(server.url, f"{nowhere}/library/tiny")
            assert out[-1] == {"status": "success"}, out
            names = [m["name"] for m in httpx.get(f"{server.url}/api/tags").json()["models"]]
    assert f"{nowhere}/library/tiny:latest" in names
    assert p.downstream >= len(tiny_gguf)


def test_no_proxy_exempts_a_registry(
    env: dict[str, str], registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    publish_tiny(registry, tiny_gguf)
    dead = f"http://127.0.0.1:{free_port()}"
    exempt = dict(env, HTTP_PROXY=dead, NO_PROXY="localhost,127.0.0.1")
    with power_server(exempt, tmp_path / "server.log") as server:
        assert pull(server.url, f"{registry.host}/library/tiny")[-1] == {"status": "success"}
    env_without = dict(env, http_proxy=dead)
    # and without the exemption the dead proxy is what the pull reports
    with power_server(env_without, tmp_path / "again.log") as server:
        out = pull(server.url, f"{registry.host}/library/tiny")
    # the registry is up, so only the proxy can be what could not be reached
    assert f"Cannot connect to host {dead.removeprefix('http://')}" in str(out[-1]["error"])
