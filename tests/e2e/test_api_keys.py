"""API keys on a real ``power serve``: each SDK's way of sending one, 401 and 403 in each API's
error shape, read-only keys, the CLI's ``A3S_POWER_API_KEY``, and keys kept out of the log."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import Server, power_server

ADMIN = "admin-7c1d9e0f2b"
VIEWER = "viewer-55e3a8b4d1"


@pytest.fixture
def keyed(server_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    env = dict(server_env, A3S_POWER_API_KEYS=f"{ADMIN},{VIEWER}:ro")
    with power_server(env, tmp_path / "server.log") as srv:
        yield srv


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_a_key_only_the_probes_answer(keyed: Server) -> None:
    for path in ("/", "/health", "/api/version"):
        assert httpx.get(keyed.url + path).status_code == 200, path
    native = httpx.get(f"{keyed.url}/api/tags")
    assert native.status_code == 401
    assert native.headers["www-authenticate"] == "Bearer"
    assert native.json()["error"].startswith("missing API key")
    wrong = httpx.get(f"{keyed.url}/api/tags", headers=bearer("guess"))
    assert wrong.status_code == 401
    assert wrong.json()["error"].startswith("invalid API key")
    as_openai = httpx.get(f"{keyed.url}/v1/models", headers=bearer("guess")).json()
    assert as_openai["error"]["code"] == "invalid_api_key"
    assert as_openai["error"]["type"] == "invalid_request_error"
    as_anthropic = httpx.post(f"{keyed.url}/v1/messages", headers={"x-api-key": "guess"}, json={})
    assert as_anthropic.status_code == 401
    assert as_anthropic.json()["type"] == "error"
    assert as_anthropic.json()["error"]["type"] == "authentication_error"
    # the refusals are counted under their route, not as unmatched paths
    text = httpx.get(f"{keyed.url}/metrics", headers=bearer(ADMIN)).text
    refused = {
        s.labels["route"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "power_http_requests_total" and s.labels["status"] == "401"
    }
    assert refused == {"/api/tags", "/v1/models", "/v1/messages"}


def test_the_sdks_send_their_keys_their_own_way(keyed: Server) -> None:
    with anthropic.Anthropic(base_url=keyed.url, api_key=VIEWER) as claude:  # x-api-key
        reply = claude.messages.create(
            model="smollm2", max_tokens=3, messages=[{"role": "user", "content": "Hi"}]
        )
    assert reply.usage.output_tokens == 3
    with anthropic.Anthropic(base_url=keyed.url, api_key="guess", max_retries=0) as wrong:
        with pytest.raises(anthropic.AuthenticationError):
            wrong.messages.create(
                model="smollm2", max_tokens=3, messages=[{"role": "user", "content": "Hi"}]
            )
    with openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=VIEWER) as good:  # Bearer
        assert "smollm2:latest" in {m.id for m in good.models.list()}  # (imported by the chat)
    with openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="guess", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


def tags(url: str) -> set[str]:
    models = httpx.get(f"{url}/api/tags", headers=bearer(VIEWER)).json()["models"]
    return {m["name"] for m in models}


def test_a_read_only_key_runs_and_reads_but_does_not_change_models(keyed: Server) -> None:
    url = keyed.url
    show = httpx.post(f"{url}/api/show", json={"model": "smollm2"}, headers=bearer(VIEWER))
    assert show.status_code == 200
    before = tags(url)
    assert "smollm2:latest" in before
    copy = {"source": "smollm2", "destination": "mine"}
    digest = "sha256:" + "0" * 64
    writes = [
        ("POST", "/api/copy", copy),
        ("DELETE", "/api/delete", {"model": "smollm2"}),
        ("POST", "/api/create", {"model": "x", "from": "smollm2"}),
        ("POST", "/api/pull", {"model": "smollm2"}),
        ("POST", "/api/push", {"model": "smollm2"}),
        ("POST", f"/api/blobs/{digest}", None),
        ("DELETE", f"/api/blobs/{digest}", None),
    ]
    for method, path, body in writes:
        resp = httpx.request(method, url + path, json=body, headers=bearer(VIEWER))
        assert resp.status_code == 403, path
        assert "read-only" in resp.json()["error"]
    assert tags(url) == before  # nothing was copied, deleted or created
    assert httpx.post(f"{url}/api/copy", json=copy, headers=bearer(ADMIN)).status_code == 200
    gone = httpx.request("DELETE", f"{url}/api/delete", json={"model": "mine"},
                         headers={"x-api-key": ADMIN})  # fmt: skip
    assert gone.status_code == 200


def test_the_cli_sends_its_key_and_keys_never_reach_the_log(
    keyed: Server, server_env: dict[str, str]
) -> None:
    def power(*args: str, key: str | None) -> subprocess.CompletedProcess[str]:
        env = dict(server_env, OLLAMA_HOST=keyed.url)
        if key is not None:
            env["A3S_POWER_API_KEY"] = key
        return subprocess.run(
            [sys.executable, "-m", "power", *args], env=env, capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=60, check=False,
        )  # fmt: skip

    listed = power("ls", key=VIEWER)
    assert listed.returncode == 0, listed.stderr
    assert "smollm2:latest" in listed.stdout
    refused = power("ls", key=None)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: missing API key")
    read_only = power("cp", "smollm2", "other", key=VIEWER)
    assert read_only.returncode == 1
    assert "read-only" in read_only.stderr
    log = keyed.log_text()
    assert "GET /api/tags 401" in log
    assert ADMIN not in log
    assert VIEWER not in log
