"""Inference semantics through a real server and real runners on the fake ``echo`` engine.

The echo engine generates the prompt's words back, so what the template rendered (tools,
tool results, which history survived truncation) is visible in the output, and a prompt
word shaped like a tool call or a thinking block comes back as one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import Server, power_server

TOOLS_TEMPLATE = (
    "{{ if .Tools }}{{ range .Tools }}[{{ .Function.Name }}]{{ end }} {{ end }}"
    "{{ range .Messages }}{{ .Content }} {{ end }}{{/* calls look like <tool_call>{…} */}}"
)
THINK_TEMPLATE = (
    "{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
    "{{ .Content }} {{ end }}"
)
PLAIN_TEMPLATE = "{{ range .Messages }}{{ .Content }} {{ end }}"
CALL = '<tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>'
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def echo(server_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    env = dict(server_env, A3S_POWER_RUNNER_ENGINE="fake:echo")
    with power_server(env, tmp_path / "server.log") as srv:
        for name, template in (
            ("echo-tools", TOOLS_TEMPLATE),
            ("echo-think", THINK_TEMPLATE),
            ("echo-plain", PLAIN_TEMPLATE),
        ):
            body = {"model": name, "from": "smollm2", "template": template, "stream": False}
            resp = httpx.post(f"{srv.url}/api/create", json=body, timeout=30)
            assert resp.status_code == 200, resp.text
        yield srv


def post(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=30)


def stream(server: Server, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{server.url}{path}", json=body, timeout=30) as resp:
        assert resp.status_code == 200, resp.read()
        return [json.loads(line) for line in resp.iter_lines()]


def test_show_reports_the_template_capabilities(echo: Server) -> None:
    caps = {
        name: post(echo, "/api/show", {"model": name}).json()["capabilities"]
        for name in ("echo-tools", "echo-think", "echo-plain")
    }
    assert caps == {
        "echo-tools": ["completion", "tools"],
        "echo-think": ["completion", "thinking"],
        "echo-plain": ["completion"],
    }


def test_a_tool_call_round_trip(echo: Server) -> None:
    body: dict[str, Any] = {
        "model": "echo-tools",
        "messages": [{"role": "user", "content": CALL}],
        "tools": TOOLS,
    }
    lines = stream(echo, "/api/chat", body)
    assert "".join(line["message"]["content"] for line in lines) == "[get_weather] "
    calls = [line["message"]["tool_calls"] for line in lines if "tool_calls" in line["message"]]
    assert len(calls) == 1
    (call,) = calls[0]
    assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    assert lines[-1]["done"] is True
    body["messages"] += [
        {"role": "assistant", "content": "", "tool_calls": calls[0]},
        {"role": "tool", "tool_name": "get_weather", "tool_call_id": call["id"], "content": "21C"},
    ]
    body["stream"] = False
    reply = post(echo, "/api/chat", body).json()["message"]
    assert reply["content"].endswith("21C ")
    assert len(reply["tool_calls"]) == 1


def test_thinking_is_split_in_chat_and_generate(echo: Server) -> None:
    text = "<think>pondering</think> the answer"
    chat = post(echo, "/api/chat", {"model": "echo-think", "stream": False,
                                    "messages": [{"role": "user", "content": text}]})  # fmt: skip
    assert chat.json()["message"] == {
        "role": "assistant", "content": "the answer ", "thinking": "pondering",
    }  # fmt: skip
    gen = post(echo, "/api/generate", {"model": "echo-think", "prompt": text, "stream": False})
    assert (gen.json()["thinking"], gen.json()["response"]) == ("pondering", "the answer ")
    body = {"model": "echo-think", "prompt": text, "stream": False, "think": False}
    off = post(echo, "/api/generate", body)
    assert off.json()["response"] == "<think>pondering</think> the answer "
    refused = post(echo, "/api/generate", {"model": "echo-plain", "prompt": "x", "think": True})
    assert refused.status_code == 400
    assert refused.json() == {"error": '"echo-plain" does not support thinking'}


def _history() -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "SYSTEM"}]
    for i in range(8):
        msgs.append({"role": "user", "content": f"q{i} " + "w " * 8})
        msgs.append({"role": "assistant", "content": f"a{i} " + "w " * 8})
    msgs.append({"role": "user", "content": "LAST"})
    return msgs


def test_chat_history_is_truncated_to_fit_the_context(echo: Server) -> None:
    body = {"model": "echo-plain", "messages": _history(), "stream": False,
            "options": {"num_ctx": 64}}  # fmt: skip
    resp = post(echo, "/api/chat", body).json()
    words = resp["message"]["content"].split()
    assert words[0] == "SYSTEM"
    assert words[-1] == "LAST"
    assert "q0" not in words
    assert "a7" in words
    assert resp["prompt_eval_count"] < 64


def test_truncate_false_with_a_long_prompt_is_a_400(echo: Server) -> None:
    body = {"model": "echo-plain", "messages": _history(), "options": {"num_ctx": 64},
            "truncate": False, "shift": False}  # fmt: skip
    resp = post(echo, "/api/chat", body)
    assert resp.status_code == 400
    assert "longer than the context length" in resp.json()["error"]


def test_format_reaches_the_runner_and_bad_formats_do_not(echo: Server) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    ok = post(echo, "/api/generate", {"model": "echo-plain", "prompt": "hi", "format": schema,
                                      "stream": False})  # fmt: skip
    assert ok.json()["response"] == "hi "
    bad = post(echo, "/api/generate", {"model": "echo-plain", "prompt": "hi", "format": "xml"})
    assert bad.status_code == 400
    assert bad.json()["error"].startswith('invalid format: "xml"')


def test_embeddings_and_chat_share_one_runner(echo: Server) -> None:
    resp = post(echo, "/api/embed", {"model": "echo-plain", "input": ["a b", "c d e"]}).json()
    assert resp["model"] == "echo-plain"
    assert resp["prompt_eval_count"] == 5
    assert len(resp["embeddings"]) == 2
    for vec in resp["embeddings"]:
        assert len(vec) == 3
        assert sum(v * v for v in vec) == pytest.approx(1.0)
    (pid,) = [m["pid"] for m in httpx.get(f"{echo.url}/api/ps").json()["models"]]
    post(echo, "/api/chat", {"model": "echo-plain", "stream": False,
                             "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    cut = post(echo, "/api/embed", {"model": "echo-plain", "input": "x y", "dimensions": 2})
    (vec,) = cut.json()["embeddings"]
    assert len(vec) == 2
    assert sum(v * v for v in vec) == pytest.approx(1.0)
    legacy = post(echo, "/api/embeddings", {"model": "echo-plain", "prompt": "x y"}).json()
    assert len(legacy["embedding"]) == 3
    assert [m["pid"] for m in httpx.get(f"{echo.url}/api/ps").json()["models"]] == [pid]


@pytest.fixture
def byte_echo(server_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    """The echo engine with a token per UTF-8 byte, so a reply can stop inside a character."""
    env = dict(server_env, A3S_POWER_RUNNER_ENGINE="fake:echo?byte_tokens=1")
    with power_server(env, tmp_path / "server.log") as srv:
        body = {"model": "echo-plain", "from": "smollm2", "template": PLAIN_TEMPLATE}
        resp = httpx.post(f"{srv.url}/api/create", json={**body, "stream": False}, timeout=30)
        assert resp.status_code == 200, resp.text
        yield srv


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_a_reply_cut_inside_a_character_drops_its_bytes(byte_echo: Server, path: str) -> None:
    # "é☃" is C3 A9 E2 98 83: the fourth token stops inside the snowman
    body: dict[str, Any] = {"model": "echo-plain", "options": {"num_predict": 4}}
    if path == "/api/generate":
        body.update(prompt="é☃", raw=True)
    else:
        body.update(messages=[{"role": "user", "content": "é☃"}])

    def text(chunk: dict[str, Any]) -> str:
        return str(chunk["response"] if "response" in chunk else chunk["message"]["content"])

    whole = post(byte_echo, path, {**body, "stream": False}).json()
    assert (text(whole), whole["done_reason"], whole["eval_count"]) == ("é", "length", 4)
    streamed = stream(byte_echo, path, {**body, "stream": True})
    assert "".join(map(text, streamed)) == "é"
