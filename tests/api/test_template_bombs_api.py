"""Hostile templates over real HTTP: a 400 for the requests that need them, and the gateway
stays up (a chat template bomb once killed it with SIGSEGV on the next /api/tags)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support.gguf import tiny_gguf
from tests.support.server import Server, post, power_server, upload

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def server(clean_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    env = dict(clean_env, A3S_POWER_RUNNER_ENGINE="fake:echo", PYTHONUNBUFFERED="1")
    with power_server(env, tmp_path / "server.log") as srv:
        yield srv


def _create(server: Server, name: str, gguf: Path) -> None:
    body = {"model": name, "files": {"m.gguf": upload(server, gguf)}, "stream": False}
    resp = post(server, "/api/create", body)
    assert resp.status_code == 200, resp.text


def _requests(model: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("/api/chat", {"model": model, "messages": HI, "stream": False}),
        ("/api/generate", {"model": model, "prompt": "hi", "stream": False}),
        ("/v1/chat/completions", {"model": model, "messages": HI}),
    ]


def _everywhere(model: str) -> list[tuple[str, dict[str, Any]]]:
    """Every request that renders the chat template: with history truncation, Anthropic's
    messages and token count too."""
    long = [{"role": "user", "content": "x " * 3000}, *HI]
    anthropic = {"model": model, "max_tokens": 8, "messages": HI}
    return [
        *_requests(model),
        ("/api/chat", {"model": model, "messages": long, "truncate": True, "stream": False,
                       "options": {"num_ctx": 512}}),
        ("/v1/messages", anthropic),
        ("/v1/messages/count_tokens", anthropic),
    ]  # fmt: skip


def test_hostile_chat_templates_are_400s_and_the_gateway_stays_up(
    server: Server, tmp_path: Path
) -> None:
    bomb = "{{ " + "-" * 100_000 + "1 }}"
    _create(server, "bomb", tiny_gguf(tmp_path / "b.gguf", extra={"tokenizer.chat_template": bomb}))
    wide = "{{ messages|tojson(indent=17) }}"
    _create(server, "wide", tiny_gguf(tmp_path / "w.gguf", extra={"tokenizer.chat_template": wide}))

    tags = httpx.get(f"{server.url}/api/tags", timeout=30)
    assert tags.status_code == 200, server.log_text()
    assert sorted(m["name"] for m in tags.json()["models"]) == ["bomb:latest", "wide:latest"]
    show = post(server, "/api/show", {"model": "bomb"})
    assert show.status_code == 200
    assert show.json()["template"] == bomb  # shown as stored, just not usable

    for model, problem in (("bomb", "chat template too complex"), ("wide", "tojson indent")):
        for path, body in _requests(model):
            resp = post(server, path, body)
            assert resp.status_code == 400, (path, resp.text)
            assert problem in resp.text
    assert server.proc.poll() is None


def test_deeply_nested_go_templates_are_400s(server: Server, tmp_path: Path) -> None:
    _create(server, "base", tiny_gguf(tmp_path / "t.gguf"))
    deep = "{{ if 1 }}" * 300 + "{{ .Prompt }}" + "{{ end }}" * 300
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("/api/create", {"model": "t", "from": "base", "template": deep, "stream": False}),
        ("/api/create", {"model": "t", "modelfile": f'FROM base\nTEMPLATE """{deep}"""'}),
        ("/api/generate", {"model": "base", "prompt": "hi", "template": deep, "stream": False}),
    ]
    for path, body in attempts:
        resp = post(server, path, {"stream": False, **body})
        assert resp.status_code == 400, (path, resp.text)
        assert "template nests too deeply" in resp.json()["error"]


def test_chat_templates_that_ask_for_gigabytes_are_400s_and_the_gateway_lives_on(
    server: Server, tmp_path: Path
) -> None:
    bombs = {  # each asks minijinja for one allocation of gigabytes: it aborts where it fails
        "strings": '{% set s = "x" * 1000000 %}{{ ([s] * 100000)|string }}',
        "joined": '{% set s = "x" * 10000000 %}{{ ([s] * 1000)|join }}',
    }
    for name, source in bombs.items():
        extra = {"tokenizer.chat_template": source}
        _create(server, name, tiny_gguf(tmp_path / f"{name}.gguf", extra=extra))
    good = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    _create(
        server, "good", tiny_gguf(tmp_path / "good.gguf", extra={"tokenizer.chat_template": good})
    )
    gateway = psutil.Process(server.proc.pid)
    before = gateway.memory_info().rss

    for model in bombs:
        for path, body in _everywhere(model):
            resp = post(server, path, body)
            assert resp.status_code == 400, (path, resp.text)
            assert "needs more memory than allowed" in resp.text, (path, resp.text)
    assert server.proc.poll() is None
    assert gateway.memory_info().rss - before < 256 * 2**20
    log = server.log_text()
    assert "memory allocation of" in log  # each worker's last stderr lines are logged
    scraped = httpx.get(f"{server.url}/metrics", timeout=30).text
    # one rendering per bomb ended its worker; the template's later requests were refused
    assert 'power_chat_template_failures_total{reason="memory"} 2.0' in scraped
    refused = len(bombs) * (len(_everywhere("x")) - 1)
    assert f'power_chat_template_failures_total{{reason="quarantined"}} {refused}.0' in scraped

    for path, body in _everywhere("good"):
        resp = post(server, path, body)
        assert resp.status_code == 200, (path, resp.text)
    chat = post(server, "/api/chat", {"model": "good", "messages": HI, "stream": False})
    assert chat.json()["message"]["content"].startswith("[user] hi")  # the fake engine echoes
