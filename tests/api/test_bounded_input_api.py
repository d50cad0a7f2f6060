"""Bodies within the size limit that would still cost the gateway without bound: a count limit
on messages, stop strings and embedding inputs, a 400 in each API's own error shape before any
template renders or runner works; and bad input items of ``/v1/responses``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from power.api.embed import MAX_INPUTS
from power.api.schemas import MAX_MESSAGES
from power.api.semantics import MAX_SCHEMA_BOUND
from power.options import MAX_STOP
from proto import Embed, Generate
from tests.support.app import TestClient
from tests.support.runners import ScriptedRunners

HI = {"role": "user", "content": "hi"}


def work(sup: ScriptedRunners) -> list[Generate | Embed]:
    """What reached a runner: generations and embeddings (not tokenizations)."""
    return [m for m in sup.sent if isinstance(m, Generate | Embed)]


def error_text(body: dict[str, Any]) -> str:
    """The message of an Ollama, OpenAI or Anthropic error body."""
    error = body["error"]
    return str(error if isinstance(error, str) else error["message"])


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/api/chat", {}),
        ("/v1/chat/completions", {}),
        ("/v1/messages", {"max_tokens": 8}),
    ],
)
def test_more_messages_than_any_context_holds_are_refused(
    client: TestClient, sup: ScriptedRunners, path: str, extra: dict[str, Any]
) -> None:
    body = {"model": "plain", "messages": [HI] * (MAX_MESSAGES + 1), "stream": False, **extra}
    resp = client.post(path, json=body)
    assert resp.status_code == 400, resp.text
    assert f"length <= {MAX_MESSAGES}" in error_text(resp.json())
    assert not work(sup)


def test_responses_refuse_more_input_items_than_messages_allowed(
    client: TestClient, sup: ScriptedRunners
) -> None:
    resp = client.post("/v1/responses", json={"model": "plain", "input": [HI] * (MAX_MESSAGES + 1)})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "input"
    assert not work(sup)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/generate", {"prompt": "hi", "options": {"stop": ["x"] * (MAX_STOP + 1)}}),
        ("/api/chat", {"messages": [HI], "options": {"stop": ["x"] * (MAX_STOP + 1)}}),
        ("/v1/chat/completions", {"messages": [HI], "stop": ["x"] * (MAX_STOP + 1)}),
        (
            "/v1/messages",
            {"messages": [HI], "max_tokens": 8, "stop_sequences": ["x"] * (MAX_STOP + 1)},
        ),
    ],
)
def test_more_stop_strings_than_the_limit_are_refused(
    client: TestClient, sup: ScriptedRunners, path: str, body: dict[str, Any]
) -> None:
    resp = client.post(path, json={"model": "plain", "stream": False, **body})
    assert resp.status_code == 400, resp.text
    assert f"more than {MAX_STOP} strings" in error_text(resp.json())
    assert not work(sup)


def test_stop_strings_up_to_the_limit_reach_the_runner(
    client: TestClient, sup: ScriptedRunners
) -> None:
    stops = [f"stop{i}" for i in range(MAX_STOP)]
    resp = client.post(
        "/api/generate",
        json={"model": "plain", "prompt": "hi", "stream": False, "options": {"stop": stops}},
    )
    assert resp.status_code == 200, resp.text
    (req,) = work(sup)
    assert isinstance(req, Generate)
    assert list(req.stop) == stops


@pytest.mark.parametrize("path", ["/api/embed", "/v1/embeddings"])
def test_more_embedding_inputs_than_the_limit_are_refused(
    client: TestClient, sup: ScriptedRunners, path: str
) -> None:
    resp = client.post(path, json={"model": "plain", "input": ["a"] * (MAX_INPUTS + 1)})
    assert resp.status_code == 400, resp.text
    assert f"more than {MAX_INPUTS} items" in error_text(resp.json())
    assert not work(sup)


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "reasoning", "summary": 5}, "input[0].summary"),
        ({"type": "reasoning", "summary": True}, "input[0].summary"),
        ({"type": "message", "content": "no role"}, "input[0].role"),
    ],
)
def test_bad_responses_input_items_are_400_naming_the_field(
    client: TestClient, item: dict[str, Any], param: str
) -> None:
    resp = client.post("/v1/responses", json={"model": "plain", "input": [item]})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param


@pytest.mark.parametrize(
    ("extra", "param", "message"),
    [
        ({"n": 0}, "n", "n must be at least 1"),
        ({"n": -1}, "n", "n must be at least 1"),
        ({"n": 2}, "n", "n > 1 is not supported"),
        ({"max_completion_tokens": -1}, "max_completion_tokens", "must not be negative"),
        ({"max_tokens": -1}, "max_tokens", "must not be negative"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "between 0 and 20"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs", "between 0 and 20"),
        ({"top_logprobs": 2}, "top_logprobs", "requires logprobs: true"),
    ],
)
def test_openai_chat_names_the_parameter_it_refuses(
    client: TestClient, sup: ScriptedRunners, extra: dict[str, Any], param: str, message: str
) -> None:
    resp = client.post("/v1/chat/completions", json={"model": "plain", "messages": [HI], **extra})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param
    assert message in error["message"]
    assert not work(sup)


@pytest.mark.parametrize(
    ("method", "path", "status", "shape"),
    [
        ("GET", "/v1/chat/completions", 405, "openai"),
        ("POST", "/v1/models", 405, "openai"),
        ("GET", "/v1/nope", 404, "openai"),
        ("GET", "/v1/messages", 405, "anthropic"),
        ("GET", "/api/nope", 404, "text"),
        ("GET", "/api/chat", 405, "text"),
    ],
)
def test_no_route_answers_in_the_shape_of_the_api_under_it(
    client: TestClient, method: str, path: str, status: int, shape: str
) -> None:
    resp = client.request(method, path)
    assert resp.status_code == status
    if shape == "text":  # (as Ollama's server answers)
        assert resp.headers["content-type"].startswith("text/plain")
    elif shape == "openai":
        assert resp.json()["error"]["type"] == {404: "not_found_error"}.get(
            status, "invalid_request_error"
        )
    else:
        assert resp.json()["type"] == "error"
        assert resp.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"system": [1]}, "system.0: must be a text block"),
        ({"system": [None]}, "system.0: must be a text block"),
        ({"system": [{"type": "image"}]}, "system.0: must be a text block"),
        ({"system": [{"type": "text", "text": "a"}, {"text": "b"}]}, "system.1: must be"),
        ({"messages": [{"role": "user", "content": []}]}, "messages.0.content: must not be"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages.0.content: must not be"),
        (
            {"messages": [{"role": "assistant", "content": ""}, HI]},
            "messages.0.content: must not be empty",
        ),
    ],
)
def test_anthropic_messages_refuse_what_anthropics_api_refuses(
    client: TestClient, sup: ScriptedRunners, extra: dict[str, Any], message: str
) -> None:
    body = {"model": "plain", "max_tokens": 8, "messages": [HI], **extra}
    resp = client.post("/v1/messages", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert resp.json()["error"]["message"].startswith(message)
    assert not work(sup)


def test_anthropic_system_blocks_and_a_final_empty_assistant_turn_are_accepted(
    client: TestClient, sup: ScriptedRunners
) -> None:
    body = {
        "model": "plain",
        "max_tokens": 8,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        "messages": [HI, {"role": "assistant", "content": ""}],
    }
    resp = client.post("/v1/messages", json=body)
    assert resp.status_code == 200, resp.text
    (req,) = work(sup)
    assert isinstance(req, Generate)
    assert "Be brief.\nBe kind." in req.prompt


def test_made_up_methods_share_one_metrics_series(client: TestClient) -> None:
    """A method is any token a client sends; each new one must not become a series for good."""
    for i in range(5):
        client.request(f"PROBE{i}", "/api/tags")
    client.get("/api/tags")
    methods = {
        line.split('method="')[1].split('"')[0]
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("power_http_requests_total{") and 'route="/api/tags"' in line
    }
    assert methods == {"GET", "other"}


BIG = MAX_SCHEMA_BOUND + 1


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/api/chat", {"format": {"type": "string", "maxLength": 100_000}}, "format.maxLength"),
        (
            "/api/generate",
            {"format": {"type": "object", "properties": {"xs": {"minItems": 10**9}}}},
            "format.properties.xs.minItems",
        ),
        ("/api/chat", {"format": {"type": "string", "pattern": "^a{0,50000}$"}}, "format.pattern"),
        ("/api/chat", {"format": {"anyOf": [{"maxItems": BIG}]}}, "format.anyOf[0].maxItems"),
        (
            "/v1/chat/completions",
            {"response_format": {"type": "json_schema", "json_schema": {
                "name": "s", "schema": {"type": "string", "maxLength": BIG}}}},
            "format.maxLength",
        ),
    ],
)  # fmt: skip
def test_json_schemas_beyond_what_a_grammar_holds_are_refused(
    client: TestClient, sup: ScriptedRunners, path: str, body: dict[str, Any], where: str
) -> None:
    """Their bounds become as many grammar rules in the runner; 30,000 crashed llama.cpp's
    grammar parser, and any past ~1,000 it refuses anyway."""
    base = {"model": "plain", "prompt": "hi", "messages": [HI], "stream": False}
    resp = client.post(path, json={**base, **body})
    assert resp.status_code == 400, resp.text
    assert where in error_text(resp.json())
    assert not work(sup)


def test_a_schema_within_the_bounds_reaches_the_runner(
    client: TestClient, sup: ScriptedRunners
) -> None:
    fmt = {"type": "string", "maxLength": MAX_SCHEMA_BOUND, "pattern": "^a{2,5}$"}
    body = {"model": "plain", "messages": [HI], "format": fmt, "stream": False}
    assert client.post("/api/chat", json=body).status_code == 200
    (sent,) = [m for m in work(sup) if isinstance(m, Generate)]
    assert json.loads(sent.json_schema) == fmt


DEEP_ARGS = "[" * 100_000 + "]" * 100_000  # (a string: the body's depth limit does not see it)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"tools": [{"type": "function", "function": {"parameters": "x"}}]}),
        ("/api/chat", {"tools": ["f"]}),
        ("/api/chat", {"messages": [HI, {"role": "assistant", "tool_calls": [{"function": "x"}]}]}),
        ("/api/chat", {"messages": [HI, {"role": "assistant", "tool_calls": ["x"]}]}),
        (
            "/api/chat",
            {"messages": [HI, {"role": "assistant", "tool_calls": [{"function": {"index": "a"}}]}]},
        ),
        (
            "/v1/chat/completions",
            {"messages": [HI, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": DEEP_ARGS}}]}]},
        ),
    ],
)  # fmt: skip
def test_malformed_tools_and_tool_calls_are_refused_not_a_server_error(
    client: TestClient, sup: ScriptedRunners, path: str, body: dict[str, Any]
) -> None:
    resp = client.post(path, json={"model": "qwen", "messages": [HI], "stream": False, **body})
    assert resp.status_code == 400, resp.text
    assert not work(sup)


def test_a_tool_message_with_an_id_that_is_not_a_string_is_no_server_error(
    client: TestClient,
) -> None:
    call = {"id": ["c"], "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [HI, {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": [1], "content": "4"}]  # fmt: skip
    resp = client.post("/v1/chat/completions", json={"model": "qwen", "messages": messages})
    assert resp.status_code < 500, resp.text
