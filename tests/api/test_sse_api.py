"""The exact SSE event sequences of ``/v1/chat/completions``, ``/v1/messages`` and
``/v1/responses``: the real app over scripted runners.

Each test asserts the whole ordered list of events a stream carries, not a subset: SDKs build
their objects from that order (OpenAI's ``ChatCompletionStreamState``, Anthropic's
``MessageStream``, the Responses stream helper), so an event out of place breaks a client even
when every event is well formed.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from power.errors import RunnerCrashedError
from proto import Done, Stats
from tests.support.app import TestClient
from tests.support.runners import ScriptedRunners, done, each

USER = [{"role": "user", "content": "hi"}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
CRASH = RunnerCrashedError("runner crashed")


def frames(client: TestClient, path: str, body: dict[str, Any]) -> list[tuple[str | None, Any]]:
    """The stream's events in order, as (``event:`` name or None, decoded ``data:``); the
    ``[DONE]`` sentinel stays a string."""
    resp = client.post(path, json={**body, "stream": True})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.text.endswith("\n\n")
    out: list[tuple[str | None, Any]] = []
    for frame in resp.text.removesuffix("\n\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.split("\n"))
        assert set(fields) <= {"event", "data"}, frame
        data = fields["data"]
        out.append((fields.get("event"), data if data == "[DONE]" else json.loads(data)))
    return out


# -- /v1/chat/completions --------------------------------------------------------------------


def chat_events(got: list[tuple[str | None, Any]], model: str = "plain") -> list[Any]:
    """Each chunk as (delta, finish_reason), the usage chunk as ("usage", usage), then
    "[DONE]"; the chunks' shared fields are checked here."""
    assert all(event is None for event, _ in got)  # OpenAI's SSE has no event names
    chunks = [data for _, data in got if data != "[DONE]"]
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["id"].startswith("chatcmpl-") for c in chunks)
    assert {(c["object"], c["model"]) for c in chunks} == {("chat.completion.chunk", model)}
    out: list[Any] = []
    for _, data in got:
        if data == "[DONE]":
            out.append(data)
        elif data["choices"]:
            (choice,) = data["choices"]
            assert (choice["index"], choice["logprobs"]) == (0, None)
            out.append((choice["delta"], choice["finish_reason"]))
        else:
            out.append(("usage", data["usage"]))
    return out


def test_chat_stream_is_role_content_finish_usage_done(
    client: TestClient, sup: ScriptedRunners
) -> None:
    sup.script = [*each("Hel", "lo", "!"), [done(prompt_tokens=7, eval_tokens=3)]]
    body = {"model": "plain", "messages": USER, "stream_options": {"include_usage": True}}
    got = frames(client, "/v1/chat/completions", body)
    assert chat_events(got) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hel"}, None),
        ({"content": "lo"}, None),
        ({"content": "!"}, None),
        ({}, "stop"),
        ("usage", {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}),
        "[DONE]",
    ]
    # with include_usage every chunk before the last carries "usage": null, as OpenAI's do
    assert [data["usage"] for _, data in got[:-2]] == [None] * 5


def test_chat_stream_without_include_usage_has_no_usage_at_all(
    client: TestClient, sup: ScriptedRunners
) -> None:
    sup.script = [*each("Hi"), [done("length", prompt_tokens=7, eval_tokens=1)]]
    got = frames(client, "/v1/chat/completions", {"model": "plain", "messages": USER})
    assert chat_events(got) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hi"}, None),
        ({}, "length"),
        "[DONE]",
    ]
    assert not any("usage" in data for _, data in got[:-1])


def test_chat_stream_with_reasoning_and_a_tool_call(
    client: TestClient, sup: ScriptedRunners
) -> None:
    sup.script = [*each("<think>hmm</think>", "Checking. ", CALL), [done()]]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}]
    body = {"model": "qwen", "messages": USER, "tools": tools, "reasoning_effort": "low"}
    got = chat_events(frames(client, "/v1/chat/completions", body), "qwen")
    call = got[3][0]["tool_calls"][0]
    assert call["id"].startswith("call_")
    assert got == [
        ({"role": "assistant", "content": ""}, None),
        ({"reasoning": "hmm"}, None),
        ({"content": "Checking. "}, None),
        ({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                          "function": {"name": "get_weather",
                                       "arguments": '{"city": "Paris"}'}}]}, None),
        ({}, "tool_calls"),
        "[DONE]",
    ]  # fmt: skip


def test_a_chat_stream_that_fails_midway_ends_with_an_error_and_no_done(
    client: TestClient, sup: ScriptedRunners
) -> None:
    sup.script = [*each("Hel", "lo"), CRASH]
    got = frames(client, "/v1/chat/completions", {"model": "plain", "messages": USER})
    assert chat_events(got[:-1]) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hel"}, None),
        ({"content": "lo"}, None),
    ]
    error = {"message": "runner crashed", "type": "api_error", "param": None, "code": None}
    assert got[-1] == (None, {"error": error})


# -- /v1/messages ----------------------------------------------------------------------------


def message_events(got: list[tuple[str | None, Any]], model: str) -> list[dict[str, Any]]:
    """The events' data, after checking that each is named after its type and that
    ``message_start`` opens the stream with an empty message."""
    assert [event for event, _ in got] == [data["type"] for _, data in got]
    start = got[0][1]["message"]
    assert start["id"].startswith("msg_")
    assert start == {"id": start["id"], "type": "message", "role": "assistant", "model": model,
                     "content": [], "stop_reason": None, "stop_sequence": None,
                     "usage": {"input_tokens": 0, "output_tokens": 0}}  # fmt: skip
    return [data for _, data in got]


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_end(stop_reason: str, input_tokens: int, output_tokens: int) -> list[dict[str, Any]]:
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    return [{"type": "message_delta", "delta": delta, "usage": usage}, {"type": "message_stop"}]


def test_messages_stream_follows_anthropics_event_order(
    client: TestClient, sup: ScriptedRunners
) -> None:
    sup.script = [*each("Hel", "lo", "!"), [done(prompt_tokens=7, eval_tokens=3)]]
    body = {"model": "plain", "max_tokens": 9, "messages": USER}
    got = message_events(frames(client, "/v1/messages", body), "plain")
    assert got[1:] == [
        {"type": "ping"},
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, {"type": "text_delta", "text": "Hel"}),
        block_delta(0, {"type": "text_delta", "text": "lo"}),
        block_delta(0, {"type": "text_delta", "text": "!"}),
        block_stop(0),
        *message_end("end_turn", 7, 3),
    ]


def test_messages_stream_with_thinking_opens_a_block_per_kind(
    client: TestClient, sup: ScriptedRunners
) -> None:
    sup.script = [*each("<think>hmm", "</think>", "It is", " 4."), [done("length", eval_tokens=4)]]
    body = {"model": "qwen", "max_tokens": 4, "messages": USER,
            "thinking": {"type": "enabled", "budget_tokens": 1024}}  # fmt: skip
    got = message_events(frames(client, "/v1/messages", body), "qwen")
    assert got[1:] == [
        {"type": "ping"},
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        block_delta(0, {"type": "thinking_delta", "thinking": "hmm"}),
        block_stop(0),
        block_start(1, {"type": "text", "text": ""}),
        block_delta(1, {"type": "text_delta", "text": "It is"}),
        block_delta(1, {"type": "text_delta", "text": " 4."}),
        block_stop(1),
        *message_end("max_tokens", 0, 4),
    ]


def test_messages_stream_with_a_tool_use_block(client: TestClient, sup: ScriptedRunners) -> None:
    sup.script = [*each("Checking. ", CALL), [done(prompt_tokens=7, eval_tokens=2)]]
    body = {"model": "qwen", "max_tokens": 9, "messages": USER,
            "tools": [{"name": "get_weather", "input_schema": SCHEMA}]}  # fmt: skip
    got = message_events(frames(client, "/v1/messages", body), "qwen")
    use_id = got[5]["content_block"]["id"]
    assert got[1:] == [
        {"type": "ping"},
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, {"type": "text_delta", "text": "Checking. "}),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": use_id, "name": "get_weather", "input": {}}),
        block_delta(1, {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'}),
        block_stop(1),
        *message_end("tool_use", 7, 2),
    ]


def test_a_messages_stream_that_fails_midway_ends_with_an_error_event(
    client: TestClient, sup: ScriptedRunners
) -> None:
    sup.script = [*each("Hel", "lo"), CRASH]
    body = {"model": "plain", "max_tokens": 9, "messages": USER}
    got = message_events(frames(client, "/v1/messages", body), "plain")
    error = got[-1]
    assert error["request_id"].startswith("req_")
    assert got[1:] == [
        {"type": "ping"},
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, {"type": "text_delta", "text": "Hel"}),
        block_delta(0, {"type": "text_delta", "text": "lo"}),
        {"type": "error", "error": {"type": "api_error", "message": "runner crashed"},
         "request_id": error["request_id"]},
    ]  # fmt: skip


def test_stop_sequences_reach_the_runner_beside_the_models_own_and_the_match_is_named(
    client: TestClient, sup: ScriptedRunners
) -> None:
    made = client.post("/api/create", json={"model": "stops", "from": "plain", "stream": False,
                                            "parameters": {"stop": ["<|end|>"]}})  # fmt: skip
    assert made.status_code == 200, made.text
    ended = Done(id=1, reason="stop", stats=Stats(prompt_tokens=5, eval_tokens=3), stop="##")
    sup.script = [*each("It is", " done"), [ended]]
    body = {"model": "stops", "max_tokens": 9, "messages": USER, "stop_sequences": ["##", "END"]}
    got = client.post("/v1/messages", json=body).json()
    assert sup.generations()[-1].stop == ("<|end|>", "##", "END")
    assert got["content"] == [{"type": "text", "text": "It is done"}]
    assert (got["stop_reason"], got["stop_sequence"]) == ("stop_sequence", "##")
    assert got["usage"] == {"input_tokens": 5, "output_tokens": 3}

    # the model's own stop string ends the turn as it always does
    sup.script = [*each("It is"), [msgspec.structs.replace(ended, stop="<|end|>")]]
    body["stream"] = True
    events = message_events(frames(client, "/v1/messages", body), "stops")
    assert events[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}

    # without stop_sequences the model's stop strings are the runner's only ones
    sup.script = [*each("It is"), [done(eval_tokens=1)]]
    body = {"model": "stops", "max_tokens": 9, "messages": USER}
    assert client.post("/v1/messages", json=body).json()["stop_reason"] == "end_turn"
    assert sup.generations()[-1].stop == ("<|end|>",)


# -- /v1/responses ---------------------------------------------------------------------------


def response_events(got: list[tuple[str | None, Any]]) -> list[dict[str, Any]]:
    """The events' data, after checking that each is named after its type, that
    ``sequence_number`` counts from 0 without a gap and that every snapshot is of one
    response."""
    events = [data for _, data in got]
    assert [event for event, _ in got] == [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(ids) == 1
    assert ids.pop().startswith("resp_")
    return events


MESSAGE_ITEM = [
    "response.output_item.added",
    "response.content_part.added",
]
MESSAGE_DONE = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def test_responses_stream_follows_openais_event_order(
    client: TestClient, sup: ScriptedRunners
) -> None:
    sup.script = [*each("Hel", "lo", "!"), [done(prompt_tokens=7, eval_tokens=3)]]
    got = response_events(frames(client, "/v1/responses", {"model": "plain", "input": "hi"}))
    assert [e["type"] for e in got] == [
        "response.created",
        "response.in_progress",
        *MESSAGE_ITEM,
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        *MESSAGE_DONE,
        "response.completed",
    ]
    assert [e["response"]["status"] for e in got[:2]] == ["in_progress", "in_progress"]
    assert [e["response"]["output"] for e in got[:2]] == [[], []]
    item_id = got[2]["item"]["id"]
    assert {e.get("item_id", item_id) for e in got[3:-2]} == {item_id}
    assert [e["delta"] for e in got[4:7]] == ["Hel", "lo", "!"]
    assert got[7]["text"] == "Hello!"
    part = {"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}
    assert got[8]["part"] == part
    message = {"type": "message", "id": item_id, "status": "completed", "role": "assistant",
               "content": [part]}  # fmt: skip
    assert got[9]["item"] == message
    final = got[-1]["response"]
    assert (final["status"], final["output"]) == ("completed", [message])
    assert final["usage"]["input_tokens"] == 7
    assert final["usage"]["output_tokens"] == 3


def test_responses_stream_with_reasoning_text_and_a_function_call(
    client: TestClient, sup: ScriptedRunners
) -> None:
    sup.script = [*each("<think>hmm</think>", "Checking. ", CALL), [done()]]
    tool = {"type": "function", "name": "get_weather", "parameters": SCHEMA}
    body = {"model": "qwen", "input": "hi", "reasoning": {"effort": "low"}, "tools": [tool]}
    got = response_events(frames(client, "/v1/responses", body))
    assert [e["type"] for e in got] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        *MESSAGE_ITEM,
        "response.output_text.delta",
        *MESSAGE_DONE,
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = [e for e in got if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [
        (0, "reasoning"), (1, "message"), (2, "function_call"),
    ]  # fmt: skip
    call = got[-2]["item"]
    assert (call["name"], call["arguments"], call["status"]) == (
        "get_weather", '{"city": "Paris"}', "completed",
    )  # fmt: skip
    assert [i["type"] for i in got[-1]["response"]["output"]] == [
        "reasoning", "message", "function_call",
    ]  # fmt: skip


def test_a_responses_stream_that_fails_midway_ends_with_response_failed(
    client: TestClient, sup: ScriptedRunners
) -> None:
    sup.script = [*each("Hel", "lo"), CRASH]
    got = response_events(frames(client, "/v1/responses", {"model": "plain", "input": "hi"}))
    assert [e["type"] for e in got] == [
        "response.created",
        "response.in_progress",
        *MESSAGE_ITEM,
        "response.output_text.delta",
        "response.output_text.delta",
        "response.failed",
    ]
    failed = got[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "runner crashed"}
