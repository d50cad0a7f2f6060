"""/api/chat, /api/generate and /api/embed semantics: the real app over scripted runners.

``ScriptedRunners`` replays runner events, so the exact NDJSON the gateway makes from them can
be asserted: format, thinking, tool calls while streaming, logprobs alignment, history
truncation and embeddings.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest

from proto import (
    Embed,
    Tokenize,
)
from tests.support.app import TestClient
from tests.support.runners import ScriptedRunners, done, each, tokens

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def lines(resp: Any) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    return [json.loads(line) for line in resp.text.splitlines()]


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (
            {"format": "yaml"},
            'invalid format: "yaml"; expected "json" or a valid JSON Schema object',
        ),
        ({"format": 42}, 'invalid format: 42; expected "json" or a valid JSON Schema object'),
        ({"think": "extreme"}, "invalid think value: 'extreme'"),
        ({"think": True}, '"plain" does not support thinking'),
        ({"think": "high"}, '"plain" does not support thinking'),
        ({"top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
    ],
)
def test_bad_semantics_are_400_before_streaming(
    client: TestClient, path: str, extra: dict[str, Any], error: str
) -> None:
    body = {"model": "plain", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}
    resp = client.post(path, json={**body, **extra})
    assert resp.status_code == 400
    assert resp.json()["error"].startswith(error)


def test_an_invalid_think_string_is_400_for_a_thinking_model_too(client: TestClient) -> None:
    resp = client.post("/api/generate", json={"model": "qwen", "prompt": "x", "think": "lots"})
    assert resp.status_code == 400
    assert "invalid think value" in resp.json()["error"]


def test_tools_need_the_tools_capability(client: TestClient) -> None:
    body = {"model": "plain", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS}
    resp = client.post("/api/chat", json=body)
    assert resp.status_code == 400
    assert resp.json() == {
        "error": "registry.ollama.ai/library/plain:latest does not support tools"
    }


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("json", "json"), (None, ""), ("", ""),
     ({"type": "object", "required": ["a"]}, '{"type":"object","required":["a"]}')],
)  # fmt: skip
def test_format_reaches_the_runner_as_json_schema(
    client: TestClient, sup: ScriptedRunners, fmt: Any, expected: str
) -> None:
    client.post("/api/generate", json={"model": "plain", "prompt": "x", "format": fmt})
    client.post("/api/chat", json={"model": "plain", "format": fmt,
                                   "messages": [{"role": "user", "content": "x"}]})  # fmt: skip
    assert [g.json_schema for g in sup.generations()] == [expected, expected]


def test_format_is_not_applied_while_thinking(client: TestClient, sup: ScriptedRunners) -> None:
    msgs = [{"role": "user", "content": "x"}]
    client.post("/api/chat", json={"model": "qwen", "messages": msgs, "format": "json"})
    body = {"model": "qwen", "messages": msgs, "format": "json", "think": False}
    client.post("/api/chat", json=body)
    assert [g.json_schema for g in sup.generations()] == ["", "json"]


# -- thinking --------------------------------------------------------------------------------


def test_chat_splits_thinking_while_streaming(client: TestClient, sup: ScriptedRunners) -> None:
    sup.script = [*each("<th", "ink>Let me", " think.</th", "ink>\n\nIt is", " 4."), [done()]]
    body = {"model": "qwen", "messages": [{"role": "user", "content": "2+2?"}]}
    got = lines(client.post("/api/chat", json=body))
    assert [(m["message"].get("thinking"), m["message"]["content"]) for m in got[:-1]] == [
        ("Let me", ""), (" think.", ""), (None, "It is"), (None, " 4."),
    ]  # fmt: skip
    assert got[-1]["done"] is True
    merged = client.post("/api/chat", json={**body, "stream": False}).json()
    assert merged["message"] == {"role": "assistant", "content": "It is 4.",
                                 "thinking": "Let me think."}  # fmt: skip


def test_think_false_leaves_the_tags_in_the_content(
    client: TestClient, sup: ScriptedRunners
) -> None:
    sup.script = [tokens("<think>x</think>y"), [done()]]
    body = {"model": "qwen", "prompt": "q", "think": False, "stream": False}
    assert client.post("/api/generate", json=body).json()["response"] == "<think>x</think>y"


def test_generate_splits_thinking_and_renders_with_think(
    client: TestClient, sup: ScriptedRunners
) -> None:
    sup.script = [*each("<think>hmm</think>", "ok"), [done()]]
    got = lines(client.post("/api/generate", json={"model": "qwen", "prompt": "q"}))
    assert [(g.get("thinking"), g["response"]) for g in got] == [("hmm", ""), (None, "ok"),
                                                                  (None, "")]  # fmt: skip
    merged = client.post("/api/generate", json={"model": "qwen", "prompt": "q", "stream": False})
    assert (merged.json()["thinking"], merged.json()["response"]) == ("hmm", "ok")


# -- tools -----------------------------------------------------------------------------------


def test_tool_calls_stream_whole_with_their_logprobs(
    client: TestClient, sup: ScriptedRunners
) -> None:
    sup.script = [
        *each("<think>weather</think>", "Checking. <tool", logprobs=True),
        *each(
            '_call>{"name": "get_weather", ',
            '"arguments": {"city": "Paris"}}</tool_call>',
            logprobs=True,
        ),
        [done(prompt_tokens=5, eval_tokens=5)],
    ]
    body = {"model": "qwen", "messages": [{"role": "user", "content": "Paris?"}],
            "tools": TOOLS, "logprobs": True}  # fmt: skip
    got = lines(client.post("/api/chat", json=body))
    assert len(got) == 4, got
    first, second, call, final = got
    assert first["message"] == {"role": "assistant", "content": "", "thinking": "weather"}
    assert second["message"] == {"role": "assistant", "content": "Checking. "}
    assert [lp["token"] for lp in first["logprobs"]] == ["<think>weather</think>"]
    assert [lp["token"] for lp in second["logprobs"]] == ["Checking. <tool"]
    (tc,) = call["message"]["tool_calls"]
    assert tc["id"].startswith("call_")
    assert len(tc["id"]) == 13
    assert tc["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    assert call["message"]["content"] == ""
    assert [lp["token"] for lp in call["logprobs"]] == [
        '_call>{"name": "get_weather", ', '"arguments": {"city": "Paris"}}</tool_call>',
    ]  # fmt: skip
    assert final["done"] is True
    assert "logprobs" not in final


def test_held_back_logprobs_reach_the_final_chunk(client: TestClient, sup: ScriptedRunners) -> None:
    sup.script = [tokens("ok ", "<tool_call>", logprobs=True), [done()]]
    body = {"model": "qwen", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS,
            "logprobs": True, "think": False}  # fmt: skip
    got = lines(client.post("/api/chat", json=body))
    assert [g["message"]["content"] for g in got] == ["ok ", "<tool_call>", ""]
    merged = client.post("/api/chat", json={**body, "stream": False}).json()
    assert [lp["token"] for lp in merged["logprobs"]] == ["ok ", "<tool_call>"]


def test_tool_definitions_and_results_are_rendered(
    client: TestClient, sup: ScriptedRunners
) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_name": "get_weather", "content": "21C"},
    ]  # fmt: skip
    sup.script = [tokens("It is 21C."), [done()]]
    body = {"model": "qwen", "messages": messages, "tools": TOOLS, "think": False, "stream": False}
    resp = client.post("/api/chat", json=body).json()
    assert resp["message"] == {"role": "assistant", "content": "It is 21C."}
    prompt = sup.generations()[0].prompt
    assert '<tools>{"name":"get_weather","description":"Weather in a city"' in prompt
    assert '<tool_call>{"name": "get_weather", "arguments": {"city":"Paris"}}</tool_call>' in prompt
    assert prompt.endswith("<|tool|>21C<|assistant|>")


def test_non_streamed_chat_collects_every_call(client: TestClient, sup: ScriptedRunners) -> None:
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "%s"}}</tool_call>'
    sup.script = [tokens(call % "Paris"), tokens("\n" + call % "Rome"), [done()]]
    body = {"model": "qwen", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS,
            "think": False, "stream": False}  # fmt: skip
    msg = client.post("/api/chat", json=body).json()["message"]
    assert msg["content"] == ""
    got = [(c["function"]["index"], c["function"]["arguments"]["city"]) for c in msg["tool_calls"]]
    assert got == [(0, "Paris"), (1, "Rome")]


def test_generate_returns_tool_calls_for_a_tools_model(
    client: TestClient, sup: ScriptedRunners
) -> None:
    sup.script = [tokens('<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>'), [done()]]
    body = {"model": "qwen", "prompt": "x", "think": False, "stream": False}
    resp = client.post("/api/generate", json=body).json()
    assert resp["response"] == ""
    assert resp["tool_calls"][0]["function"] == {"index": 0, "name": "f", "arguments": {"a": 1}}


def test_without_tools_tool_text_is_content(client: TestClient, sup: ScriptedRunners) -> None:
    text = '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
    sup.script = [tokens(text), [done()]]
    body = {"model": "qwen", "messages": [{"role": "user", "content": "x"}], "think": False,
            "stream": False}  # fmt: skip
    assert client.post("/api/chat", json=body).json()["message"] == {
        "role": "assistant", "content": text,
    }  # fmt: skip


# -- history truncation ----------------------------------------------------------------------


def _history(n: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "be brief"}]
    for i in range(n):
        msgs.append({"role": "user", "content": f"question {i} " + "word " * 20})
        msgs.append({"role": "assistant", "content": f"answer {i} " + "word " * 20})
    msgs.append({"role": "user", "content": "last question"})
    return msgs


def test_oldest_history_is_dropped_to_fit_the_context(
    client: TestClient, sup: ScriptedRunners
) -> None:
    body = {"model": "plain", "messages": _history(10), "options": {"num_ctx": 100}}
    assert client.post("/api/chat", json=body).status_code == 200
    (gen,) = sup.generations()
    assert gen.prompt.startswith("<|system|>be brief <|user|>question 8 ")
    assert "answer 8" in gen.prompt
    assert gen.prompt.endswith("<|user|>last question <|assistant|>")
    assert len(gen.prompt.split()) + 1 < 100
    assert sum(isinstance(m, Tokenize) for m in sup.sent) <= 6  # a binary search, not a scan


def test_a_prompt_that_fits_is_not_counted(client: TestClient, sup: ScriptedRunners) -> None:
    body = {"model": "plain", "messages": _history(10)}
    assert client.post("/api/chat", json=body).status_code == 200
    assert not any(isinstance(m, Tokenize) for m in sup.sent)
    assert sup.generations()[0].prompt.startswith("<|system|>be brief <|user|>question 0 ")


def test_truncate_false_keeps_everything_for_the_runner_to_judge(
    client: TestClient, sup: ScriptedRunners
) -> None:
    body = {"model": "plain", "messages": _history(10), "options": {"num_ctx": 100},
            "truncate": False}  # fmt: skip
    client.post("/api/chat", json=body)
    (gen,) = sup.generations()
    assert "question 0" in gen.prompt
    assert gen.truncate is False


# -- images ----------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_images_reach_the_runner_in_the_order_their_tags_number_them(
    client: TestClient, sup: ScriptedRunners
) -> None:
    messages = [
        {"role": "user", "content": "first", "images": [b64(b"one"), b64(b"two")]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and [img] this?", "images": [b64(b"three")]},
    ]
    assert client.post("/api/chat", json={"model": "vis", "messages": messages}).status_code == 200
    body = {"model": "vis", "prompt": "describe", "images": [b64(b"four")]}
    assert client.post("/api/generate", json=body).status_code == 200
    chat_gen, gen = sup.generations()
    assert chat_gen.images == (b"one", b"two", b"three")
    assert (
        "<|user|>[img-0][img-1]first <|assistant|>ok <|user|>and [img-2] this?" in chat_gen.prompt
    )
    assert gen.images == (b"four",)
    assert gen.prompt == "<|user|>[img-0]\n\ndescribe <|assistant|>"  # user turns collated


def test_history_truncation_counts_images_and_renumbers_the_kept_ones(
    client: TestClient, sup: ScriptedRunners
) -> None:
    messages = [
        {"role": "user", "content": "old", "images": [b64(b"old")]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "new", "images": [b64(b"new")]},
    ]
    body = {"model": "vis", "messages": messages, "options": {"num_ctx": 1000}}
    assert client.post("/api/chat", json=body).status_code == 200
    (gen,) = sup.generations()
    assert gen.images == (b"new",)
    assert gen.prompt == "<|assistant|>ok <|user|>[img-0]new <|assistant|>"


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        (
            "/api/chat",
            {"messages": [{"role": "user", "content": "x", "images": ["bad!"]}]},
            "invalid image data in messages[0].images[0]: ",
        ),
        (
            "/api/generate",
            {"prompt": "x", "images": ["a", "bad!"]},
            "invalid image data in images[0]",
        ),
        (
            "/api/generate",
            {"model": "plain", "prompt": "x", "images": [b64(b"x")]},
            '"plain" does not support images',
        ),
    ],
)
def test_bad_images_are_400_before_the_runner(
    client: TestClient, sup: ScriptedRunners, path: str, body: dict[str, Any], error: str
) -> None:
    resp = client.post(path, json={"model": "vis", **body})
    assert resp.status_code == 400
    assert resp.json()["error"].startswith(error)
    assert sup.generations() == []


# -- embeddings ------------------------------------------------------------------------------


def test_embed_normalises_cuts_and_reports(client: TestClient, sup: ScriptedRunners) -> None:
    sup.vectors = [[3.0, 4.0, 12.0], [1.0, 0.0, 0.0]]
    resp = client.post("/api/embed", json={"model": "plain", "input": ["a b", "c"]})
    body = resp.json()
    assert list(body) == ["model", "embeddings", "total_duration", "prompt_eval_count"]
    assert body["model"] == "plain"
    assert body["prompt_eval_count"] == 3
    assert body["embeddings"][0] == pytest.approx([3 / 13, 4 / 13, 12 / 13])
    cut = client.post("/api/embed", json={"model": "plain", "input": ["a b", "c"],
                                          "dimensions": 2}).json()  # fmt: skip
    assert cut["embeddings"] == [pytest.approx([0.6, 0.8]), [1.0, 0.0]]
    embed_msg = next(m for m in sup.sent if isinstance(m, Embed))
    assert embed_msg.inputs == ("a b", "c")
    assert embed_msg.normalize


@pytest.mark.parametrize("value", [42, ["a", 1], {"a": "b"}])
def test_embed_rejects_other_input_types(client: TestClient, value: Any) -> None:
    resp = client.post("/api/embed", json={"model": "plain", "input": value})
    assert resp.status_code == 400
    assert resp.json() == {"error": "invalid input type"}


@pytest.mark.parametrize("value", [None, "", []])
def test_empty_embed_input_loads_the_model(
    client: TestClient, sup: ScriptedRunners, value: Any
) -> None:
    resp = client.post("/api/embed", json={"model": "plain", "input": value})
    assert resp.json() == {"model": "plain", "embeddings": []}
    assert sup.loads == 1


def test_embed_model_not_found_uses_ollamas_wording(client: TestClient) -> None:
    resp = client.post("/api/embed", json={"model": "ghost", "input": "x"})
    assert resp.status_code == 404
    assert resp.json() == {"error": 'model "ghost" not found, try pulling it first'}


def test_nan_embeddings_are_refused(client: TestClient, sup: ScriptedRunners) -> None:
    sup.vectors = [[math.nan, 1.0]]
    resp = client.post("/api/embed", json={"model": "plain", "input": "x"})
    assert resp.status_code == 400
    assert resp.json() == {"error": "embedding contains NaN or Inf values"}


def test_legacy_embeddings_are_not_normalised(client: TestClient, sup: ScriptedRunners) -> None:
    sup.vectors = [[3.0, 4.0]]
    resp = client.post("/api/embeddings", json={"model": "plain", "prompt": "hello"})
    assert resp.json() == {"embedding": [3.0, 4.0]}
    assert [m.normalize for m in sup.sent if isinstance(m, Embed)] == [False]
    empty = client.post("/api/embeddings", json={"model": "plain", "prompt": ""})
    assert empty.json() == {"embedding": []}
