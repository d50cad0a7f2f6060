"""Open WebUI in front of ``power serve``, driven through its own HTTP API (``nox -s openwebui``).

Open WebUI is too large to install on every CI run (it brings torch), so this runs before a
release. It is started offline, without authentication (one admin user), with Ollama as its
only connection and as its embedding engine, and with the background tasks that would send
extra requests to the model (titles, tags, follow-ups) switched off.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clients.served import Power, finish_for
from tests.support.net import free_port
from tests.support.wait import wait_until

START_TIMEOUT_S = 300.0  # a cold start imports torch and migrates a new database
pytestmark = [pytest.mark.client("open-webui"), pytest.mark.timeout(START_TIMEOUT_S + 180)]

OPEN_WEBUI = str(Path(sys.executable).parent / "open-webui")
LIMIT = 8
MODEL = "smollm2:latest"


@dataclass
class WebUI:
    url: str
    token: str

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=120, **kwargs)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def open_webui(pw: Power, home: Path) -> Iterator[WebUI]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "HOME": str(home),
        "DATA_DIR": str(home / "data"),
        "WEBUI_SECRET_KEY": "client-tests",
        "WEBUI_AUTH": "False",
        "OLLAMA_BASE_URL": pw.url,
        "ENABLE_OPENAI_API": "False",
        "RAG_EMBEDDING_ENGINE": "ollama",
        "RAG_EMBEDDING_MODEL": MODEL,
        "ENABLE_TITLE_GENERATION": "False",
        "ENABLE_TAGS_GENERATION": "False",
        "ENABLE_FOLLOW_UP_GENERATION": "False",
        "ENABLE_AUTOCOMPLETE_GENERATION": "False",
        # nothing leaves the machine: no model hub, no update check, no telemetry
        "OFFLINE_MODE": "True",
        "HF_HUB_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
        "SCARF_NO_ANALYTICS": "true",
        "DO_NOT_TRACK": "true",
    }
    log = home / "open-webui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [OPEN_WEBUI, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"open-webui did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        signin = {"email": "admin@localhost", "password": ""}
        resp = httpx.post(f"{url}/api/v1/auths/signin", json=signin, timeout=60)
        assert resp.status_code == 200, resp.text
        yield WebUI(url, resp.json()["token"])
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def webui(smollm2: Power, tmp_path: Path) -> Iterator[WebUI]:
    with open_webui(smollm2, tmp_path) as ui:
        yield ui


def models(ui: WebUI) -> dict[str, dict[str, Any]]:
    resp = ui.call("GET", "/api/models")
    assert resp.status_code == 200, resp.text
    return {m["id"]: m for m in resp.json()["data"]}


def chat_body(stream: bool) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Name a colour."}],
        "stream": stream,
        "params": {"temperature": 0, "seed": 7, "max_tokens": LIMIT},
    }


def test_models_listed_with_their_loaded_state(smollm2: Power, webui: WebUI) -> None:
    """models listed (Ollama's /api/tags) and each one's loaded state (/api/ps)"""
    tags = httpx.get(f"{smollm2.url}/api/tags", timeout=30).json()["models"]
    listed = models(webui)
    assert {t["name"] for t in tags} <= set(listed)
    assert listed[MODEL]["owned_by"] == "ollama"
    assert listed[MODEL]["loaded"] is False
    load = httpx.post(f"{smollm2.url}/api/generate", json={"model": MODEL}, timeout=120)
    assert load.status_code == 200, load.text
    # Open WebUI caches its Ollama model list for a second (MODELS_CACHE_TTL)
    wait_until(lambda: models(webui)[MODEL]["loaded"] is True, timeout_s=30, interval_s=0.5)


def test_chat_completed_whole_and_streamed(smollm2: Power, webui: WebUI) -> None:
    """a chat completed, whole and streamed: the reply, usage equal to the server's, finish"""
    mark = smollm2.mark()
    resp = webui.call("POST", "/api/chat/completions", json=chat_body(stream=False))
    assert resp.status_code == 200, resp.text
    whole = resp.json()
    headers = {"Authorization": f"Bearer {webui.token}"}
    url = f"{webui.url}/api/chat/completions"
    with httpx.stream("POST", url, json=chat_body(stream=True), headers=headers, timeout=120) as r:
        assert r.status_code == 200, r.read()
        events = [
            json.loads(line[6:])
            for line in r.iter_lines()
            if line.startswith("data: ") and line != "data: [DONE]"
        ]
    first, second = smollm2.since(mark, 2)

    (choice,) = whole["choices"]
    assert choice["message"]["content"]
    assert choice["finish_reason"] == finish_for(first, LIMIT)
    usage = whole["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
        first.prompt_tokens,
        first.output_tokens,
    )
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == choice["message"]["content"]  # greedy and seeded
    last = events[-1]
    assert last["choices"][0]["finish_reason"] == finish_for(second, LIMIT)
    assert (last["usage"]["prompt_tokens"], last["usage"]["completion_tokens"]) == (
        second.prompt_tokens,
        second.output_tokens,
    )


def test_document_embedded_and_retrieved(smollm2: Power, webui: WebUI) -> None:
    """a document uploaded, embedded through /api/embed, and found again by a query"""
    text = "The capital of France is Paris. A3S Power serves local models."
    mark = smollm2.mark()
    files = {"file": ("notes.txt", text.encode(), "text/plain")}
    resp = webui.call("POST", "/api/v1/files/?process=true", files=files)
    assert resp.status_code == 200, resp.text
    file_id = resp.json()["id"]

    def processed() -> bool:
        status = webui.call("GET", f"/api/v1/files/{file_id}/process/status").json()["status"]
        assert status != "failed", webui.call("GET", f"/api/v1/files/{file_id}").text
        return bool(status == "completed")

    wait_until(processed, timeout_s=120, interval_s=0.5)
    (embedded,) = smollm2.since(mark, 1)
    assert (embedded.route, embedded.model) == ("/api/embed", MODEL)
    assert embedded.prompt_tokens > 0

    query = {"collection_name": f"file-{file_id}", "query": "capital of France", "k": 1}
    found = webui.call("POST", "/api/v1/retrieval/query/doc", json=query)
    assert found.status_code == 200, found.text
    assert found.json()["documents"] == [[text]]
    (_, by_query) = smollm2.since(mark, 2)
    assert by_query.route == "/api/embed"
