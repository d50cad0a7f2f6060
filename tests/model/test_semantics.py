"""Inference semantics end to end with the real runner and SmolLM2-135M-Instruct.

A real ``python -m power serve`` per test; greedy sampling, so the answers are reproducible.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from proto import MAX_TOKENIZE_BYTES
from tests.support.server import Server, post

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0, "seed": 42}
CHATML_TOOLS = """\
{{- if .Tools }}<|im_start|>system
You are a function calling AI model. Function signatures are within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{{ json .Function }}
{{- end }}
</tools>
For each function call, return a JSON object with the function name and arguments within \
<tool_call></tool_call> XML tags.<|im_end|>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}{{ end }}
{{- range .ToolCalls }}<tool_call>
{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}
</tool_call>{{ end }}<|im_end|>
{{ else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- end }}<|im_start|>assistant
"""
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def _call(city: str) -> dict[str, Any]:
    fn = {"name": "get_weather", "arguments": {"city": city}}
    return {"role": "assistant", "content": "", "tool_calls": [{"function": fn}]}


def test_a_templated_tool_call_round_trip(server: Server) -> None:
    created = post(server, "/api/create", {"model": "smol-tools", "from": "smollm2",
                                           "template": CHATML_TOOLS, "stream": False})  # fmt: skip
    assert created.status_code == 200, created.text
    messages = [
        {"role": "user", "content": "What is the weather in Rome?"},
        _call("Rome"),
        {"role": "user", "content": "What is the weather in Berlin?"},
        _call("Berlin"),
        {"role": "user", "content": "What is the weather in Paris?"},
    ]
    body: dict[str, Any] = {"model": "smol-tools", "messages": messages, "tools": [WEATHER],
                            "options": {**GREEDY, "num_predict": 40}}  # fmt: skip
    with httpx.stream("POST", f"{server.url}/api/chat", json=body, timeout=110) as resp:
        assert resp.status_code == 200
        lines = [json.loads(line) for line in resp.iter_lines()]
    with_calls = [
        line["message"]["tool_calls"] for line in lines if "tool_calls" in line["message"]
    ]
    assert len(with_calls) == 1  # whole, in one chunk
    (call,) = with_calls[0]
    assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    assert "<tool_call>" not in "".join(line["message"]["content"] for line in lines)
    body["messages"] += [
        {"role": "assistant", "content": "", "tool_calls": with_calls[0]},
        {"role": "tool", "tool_name": "get_weather", "content": "21C and cloudy"},
    ]
    body["stream"] = False
    reply = post(server, "/api/chat", body)
    assert reply.status_code == 200
    assert reply.json()["done"] is True


def test_schema_constrained_output_parses_and_validates(server: Server) -> None:
    schema = {
        "type": "object",
        "properties": {
            "capital": {"type": "string", "enum": ["Paris", "London", "Rome"]},
            "population_millions": {"type": "integer"},
        },
        "required": ["capital", "population_millions"],
    }
    body = {"model": "smollm2", "stream": False, "format": schema,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "options": {**GREEDY, "num_predict": 64}}  # fmt: skip
    resp = post(server, "/api/chat", body)
    assert resp.status_code == 200, resp.text
    value = json.loads(resp.json()["message"]["content"])
    assert set(value) >= {"capital", "population_millions"}
    assert value["capital"] in ("Paris", "London", "Rome")
    assert isinstance(value["population_millions"], int)


def _history() -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(10):
        msgs.append({"role": "user", "content": f"Tell me fact number {i} about the sea. " * 3})
        msgs.append({"role": "assistant", "content": f"Fact {i}: the sea is deep and wide. " * 3})
    msgs.append({"role": "user", "content": "Say hello."})
    return msgs


def test_history_is_truncated_to_a_tiny_context_and_truncate_false_is_a_400(
    server: Server,
) -> None:
    opts = {**GREEDY, "num_ctx": 256, "num_predict": 8}
    body: dict[str, Any] = {"model": "smollm2", "messages": _history(), "stream": False,
                            "options": opts}  # fmt: skip
    resp = post(server, "/api/chat", body)
    assert resp.status_code == 200, resp.text
    assert 0 < resp.json()["prompt_eval_count"] < 256
    resp = post(server, "/api/chat", {**body, "truncate": False, "shift": False})
    assert resp.status_code == 400
    assert "longer than the context length" in resp.json()["error"]


def test_text_over_the_tokenize_limit_leaves_the_history_or_is_a_400_naming_the_limit(
    server: Server,
) -> None:
    huge = "word " * (MAX_TOKENIZE_BYTES // 5 + 1)
    msgs = [{"role": "user", "content": huge}, {"role": "assistant", "content": "OK."},
            {"role": "user", "content": "Say hello."}]  # fmt: skip
    opts = {**GREEDY, "num_ctx": 256, "num_predict": 4}
    resp = post(server, "/api/chat", {"model": "smollm2", "messages": msgs, "stream": False,
                                      "options": opts})  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert 0 < resp.json()["prompt_eval_count"] < 64  # the huge message was dropped
    counted = post(server, "/v1/messages/count_tokens", {"model": "smollm2", "messages": msgs})
    assert counted.status_code == 400
    assert f"over the limit of {MAX_TOKENIZE_BYTES >> 20} MiB" in counted.json()["error"]["message"]
    small = post(server, "/v1/messages/count_tokens", {"model": "smollm2", "messages": msgs[2:]})
    assert small.status_code == 200
    assert 0 < small.json()["input_tokens"] < 64


def test_embeddings_shape_norm_batch_and_no_reload_between_chat_and_embed(server: Server) -> None:
    resp = post(server, "/api/embed", {"model": "smollm2", "input": ["The sea is deep.", "Hi"]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["embeddings"]) == 2
    assert {len(v) for v in body["embeddings"]} == {576}  # SmolLM2-135M's n_embd
    for vec in body["embeddings"]:
        assert sum(x * x for x in vec) == pytest.approx(1.0, abs=1e-4)
    assert body["embeddings"][0] != body["embeddings"][1]
    assert body["prompt_eval_count"] > 2
    (pid,) = [m["pid"] for m in httpx.get(f"{server.url}/api/ps").json()["models"]]
    chat = {"model": "smollm2", "stream": False, "options": {**GREEDY, "num_predict": 4},
            "messages": [{"role": "user", "content": "Hi"}]}  # fmt: skip
    assert post(server, "/api/chat", chat).status_code == 200
    cut = post(server, "/api/embed", {"model": "smollm2", "input": "Hi", "dimensions": 64}).json()
    assert len(cut["embeddings"][0]) == 64
    assert sum(x * x for x in cut["embeddings"][0]) == pytest.approx(1.0, abs=1e-4)
    legacy = post(server, "/api/embeddings", {"model": "smollm2", "prompt": "Hi"}).json()
    assert len(legacy["embedding"]) == 576
    assert [m["pid"] for m in httpx.get(f"{server.url}/api/ps").json()["models"]] == [pid]


def test_an_openai_sdk_tool_call_round_trip(server: Server) -> None:
    """The same templated model through /v1 with the official SDK: tool_calls out, results in."""
    from openai import OpenAI

    created = post(server, "/api/create", {"model": "smol-tools", "from": "smollm2",
                                           "template": CHATML_TOOLS, "stream": False})  # fmt: skip
    assert created.status_code == 200, created.text

    def call(city: str, ident: str) -> dict[str, Any]:
        fn = {"name": "get_weather", "arguments": json.dumps({"city": city})}
        return {"role": "assistant", "content": None,
                "tool_calls": [{"id": ident, "type": "function", "function": fn}]}  # fmt: skip

    messages: list[Any] = [  # the few-shot history of the native test above
        {"role": "user", "content": "What is the weather in Rome?"},
        call("Rome", "call_a"),
        {"role": "user", "content": "What is the weather in Berlin?"},
        call("Berlin", "call_b"),
        {"role": "user", "content": "What is the weather in Paris?"},
    ]
    extra = {"options": {**GREEDY, "num_predict": 40}}
    tools: Any = [WEATHER]
    with OpenAI(base_url=f"{server.url}/v1", api_key="unused") as client:
        reply = client.chat.completions.create(
            model="smol-tools",
            messages=messages,
            tools=tools,
            extra_body=extra,
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        (tool_call,) = choice.message.tool_calls or []
        assert tool_call.function.name == "get_weather"  # type: ignore[union-attr]
        assert json.loads(tool_call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
        stream: Any = client.chat.completions.create(
            model="smol-tools",
            messages=messages,
            tools=tools,
            extra_body=extra,
            stream=True,
        )
        deltas = [
            c.choices[0].delta.tool_calls
            for c in stream
            if c.choices and c.choices[0].delta.tool_calls
        ]
        assert len(deltas) == 1
        assert deltas[0][0].index == 0
        assert deltas[0][0].function is not None
        assert deltas[0][0].function.name == "get_weather"
        messages += [
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": tool_call.id, "content": "21C and cloudy"},
        ]
        final = client.chat.completions.create(
            model="smol-tools",
            messages=messages,
            tools=tools,
            extra_body=extra,
        )
        assert final.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_an_anthropic_sdk_tool_use_round_trip(server: Server) -> None:
    """The templated model through /v1/messages: tool_use out, tool_result in."""
    import anthropic

    created = post(server, "/api/create", {"model": "smol-tools", "from": "smollm2",
                                           "template": CHATML_TOOLS, "stream": False})  # fmt: skip
    assert created.status_code == 200, created.text

    def use(city: str, ident: str) -> list[Any]:
        block = {"type": "tool_use", "id": ident, "name": "get_weather", "input": {"city": city}}
        return [{"role": "assistant", "content": [block]}]

    fn: Any = WEATHER["function"]
    tools: Any = [{"name": fn["name"], "description": fn["description"],
                   "input_schema": fn["parameters"]}]  # fmt: skip
    messages: Any = [
        {"role": "user", "content": "What is the weather in Rome?"},
        *use("Rome", "toolu_a"),
        {"role": "user", "content": "What is the weather in Berlin?"},
        *use("Berlin", "toolu_b"),
        {"role": "user", "content": "What is the weather in Paris?"},
    ]
    extra = {"options": {**GREEDY, "num_predict": 40}}
    with anthropic.Anthropic(base_url=server.url, api_key="unused") as client:
        reply = client.messages.create(
            model="smol-tools", max_tokens=40, messages=messages, tools=tools, extra_body=extra
        )
        assert reply.stop_reason == "tool_use"
        (block,) = [b for b in reply.content if b.type == "tool_use"]
        assert block.name == "get_weather"
        assert block.input == {"city": "Paris"}
        messages += [
            {"role": "assistant", "content": [b.model_dump() for b in reply.content]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": block.id, "content": "21C and cloudy"}
            ]},
        ]  # fmt: skip
        final = client.messages.create(
            model="smol-tools", max_tokens=40, messages=messages, tools=tools, extra_body=extra
        )
        assert final.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_penalty_options_reach_the_sampler(server: Server) -> None:
    prompt = "Repeat after me forever: la la la la la la la la la la"

    def answer(**options: float) -> str:
        body = {"model": "smollm2", "prompt": prompt, "stream": False,
                "options": {**GREEDY, "num_predict": 24, **options}}  # fmt: skip
        resp = post(server, "/api/generate", body)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["response"])

    plain = answer()
    assert answer() == plain  # greedy is reproducible, so a difference below is the option's
    assert answer(repeat_penalty=1.8, repeat_last_n=64) != plain
    assert answer(frequency_penalty=1.5) != plain
    assert answer(presence_penalty=1.5) != plain


def test_the_same_request_twice_reports_the_same_prompt_eval_count(server: Server) -> None:
    ask = [{"role": "user", "content": "Name three colours of the rainbow."}]
    body = {"model": "smollm2", "stream": False, "options": {**GREEDY, "num_predict": 4},
            "messages": ask}  # fmt: skip
    first = post(server, "/api/chat", body).json()
    again = post(server, "/api/chat", body).json()
    assert first["prompt_eval_count"] > 10
    assert again["prompt_eval_count"] == first["prompt_eval_count"]  # the whole prompt, twice
    assert again["prompt_cache_count"] == again["prompt_eval_count"] - 1  # all but one reused
    usage = post(server, "/v1/chat/completions", {**body, "max_tokens": 4}).json()["usage"]
    assert usage["prompt_tokens"] == first["prompt_eval_count"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_cut_inside_a_character_does_not_end_in_a_replacement_character(
    server: Server, stream: bool
) -> None:
    # SmolLM2 writes a snowman (E2 98 83) as three byte tokens, and repeats a run of them
    body = {"model": "smollm2", "prompt": "☃" * 10, "raw": True, "stream": stream,
            "options": {**GREEDY, "num_predict": 4}}  # fmt: skip
    resp = post(server, "/api/generate", body)
    assert resp.status_code == 200, resp.text
    chunks = [json.loads(line) for line in resp.text.splitlines()]
    assert "".join(c["response"] for c in chunks) == "☃"  # the second one's first byte dropped
    assert chunks[-1]["eval_count"] == 4
