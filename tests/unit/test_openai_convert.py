"""OpenAI / Anthropic / Responses bodies -> native requests, and native chunks -> their outputs."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from power.api.anthropic import convert as acv
from power.api.anthropic.messages import _Block, _collect, _events, _Result
from power.api.openai import convert as cv
from power.api.openai.chat import ChatCompletionRequest, native_chat_request
from power.api.openai.chat import _collect as chat_collect
from power.api.openai.chat import _events as chat_events
from power.api.openai.responses import ResponsesRequest, input_messages, native_request
from power.api.openai.responses_stream import ResponseBuilder
from power.api.openai.responses_stream import events as response_events
from power.api.openai.sse import ParamError, openai_error_body, sampling_options
from power.api.schemas import ChatChunk, Logprob, Message
from power.errors import InvalidRequestError, ModelNotFoundError, PowerError

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()
CALL = {"id": "call_abc", "function": {"index": 0, "name": "lookup", "arguments": {"q": "x"}}}


def chunk(content: str = "", *, done: bool = False, **extra: Any) -> ChatChunk:
    msg = Message(role="assistant", content=content)
    for key in ("thinking", "tool_calls"):
        if key in extra:
            setattr(msg, key, extra.pop(key))
    return ChatChunk(model="m", created_at="t", message=msg, done=done, **extra)


async def agen(items: list[ChatChunk]) -> AsyncIterator[ChatChunk]:
    for item in items:
        yield item


def sse_payloads(raw: list[bytes]) -> list[Any]:
    out = []
    for event in b"".join(raw).decode().split("\n\n"):
        data = [line[6:] for line in event.splitlines() if line.startswith("data: ")]
        if data:
            out.append(data[0] if data[0] == "[DONE]" else json.loads(data[0]))
    return out


def req(**fields: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return msgspec.convert(body, ChatCompletionRequest)


# -- requests ---------------------------------------------------------------------------------


def test_content_parts_become_one_message_with_text_and_images() -> None:
    (msg,) = cv.convert_messages([{"role": "user", "content": [
        {"type": "text", "text": "What is"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "text", "text": "this?"},
    ]}])  # fmt: skip
    assert (msg.role, msg.content, msg.images) == ("user", "What is\nthis?", [PNG])


@pytest.mark.parametrize(
    ("url", "needle"),
    [("https://example.com/a.png", "base64 data URL"), ("data:text/plain;base64,eA==", "data:")],
)
def test_image_urls_that_cannot_be_used_are_a_clear_400(url: str, needle: str) -> None:
    parts = [{"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(ParamError, match=needle) as err:
        cv.convert_messages([{"role": "user", "content": parts}])
    assert err.value.status == 400
    assert err.value.param == "messages[0].content[0]"


def test_assistant_tool_calls_and_tool_results_convert_both_ways() -> None:
    msgs = cv.convert_messages([
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Look it up"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "lookup", "arguments": '{"q": "x"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "found"},
    ])  # fmt: skip
    assert msgs[0].role == "system"
    assert msgs[2].tool_calls == [
        {"id": "call_1", "function": {"index": 0, "name": "lookup", "arguments": {"q": "x"}}}
    ]
    assert (msgs[3].tool_name, msgs[3].tool_call_id) == ("lookup", "call_1")
    back = cv.openai_tool_call(msgs[2].tool_calls[0], 0, "unused")  # type: ignore[index]
    assert back == {"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "x"}'}}  # fmt: skip


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": None, "tool_calls": [
            {"function": {"name": "f", "arguments": "{not json"}}]},
        {"role": "user", "content": None},
        {"role": "robot", "content": "x"},
    ],
)  # fmt: skip
def test_invalid_messages_are_400(message: dict[str, Any]) -> None:
    with pytest.raises(ParamError):
        cv.convert_messages([message])


def test_request_mapping_defaults_and_extensions() -> None:
    native = native_chat_request(
        req(max_tokens=5, max_completion_tokens=9, stop="END", seed=3, options={"num_ctx": 512},
            response_format={"type": "json_object"}, reasoning_effort="minimal",
            logprobs=True, top_logprobs=2),
        "10m",
    )  # fmt: skip
    assert native.options == {"num_ctx": 512, "temperature": 1.0, "top_p": 1.0,
                              "num_predict": 9, "seed": 3, "stop": ["END"]}  # fmt: skip
    assert (native.keep_alive, native.format, native.think) == ("10m", "json", "low")
    assert (native.logprobs, native.top_logprobs) == (True, 2)
    schema = {"type": "object"}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert native_chat_request(req(response_format=fmt), None).format == schema
    assert sampling_options({"temperature": 0.2}, temperature=None, top_p=0.5) == {
        "temperature": 0.2, "top_p": 0.5}  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"n": 2}, "n"), ({"reasoning_effort": "huge"}, "reasoning_effort"),
     ({"tool_choice": "sometimes"}, "tool_choice"), ({"tool_choice": "required"}, "tool_choice"),
     ({"response_format": {"type": "yaml"}}, "response_format"), ({"stop": [1]}, "stop")],
)  # fmt: skip
def test_unsupported_or_invalid_fields_name_their_param(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(ParamError) as err:
        native_chat_request(req(**fields), None)
    assert openai_error_body(err.value)["error"]["param"] == param


def test_tool_choice_none_drops_tools_and_a_named_function_is_enforced() -> None:
    tools = [{"type": "function", "function": {"name": n, "parameters": {}}} for n in "ab"]
    assert native_chat_request(req(tools=tools, tool_choice="none"), None).tools is None
    named = {"type": "function", "function": {"name": "b"}}
    native = native_chat_request(req(tools=tools, tool_choice=named), None)
    assert native.tools == [tools[1]]
    assert native.messages[0].role == "system"
    assert "`b`" in native.messages[0].content
    with pytest.raises(ParamError, match="unknown function"):
        cv.apply_tool_choice(cv.convert_tools(tools), "function", "zzz")


def test_error_bodies_have_each_api_shape() -> None:
    missing = ModelNotFoundError("model 'x' not found")
    assert openai_error_body(missing) == {"error": {
        "message": "model 'x' not found", "type": "not_found_error", "param": None,
        "code": "model_not_found"}}  # fmt: skip
    body = acv.anthropic_error_body(InvalidRequestError("bad"))
    assert body["type"] == "error"
    assert body["error"] == {"type": "invalid_request_error", "message": "bad"}
    assert acv.anthropic_error_body(PowerError("x"))["error"]["type"] == "api_error"


def test_anthropic_blocks_convert_to_native_messages() -> None:
    msgs = acv.convert_messages(
        [
            {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                         {"type": "image", "source": {"type": "base64",
                                          "media_type": "image/png", "data": PNG}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "need a tool", "signature": ""},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"c": "P"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": "sunny"}]},
                {"type": "text", "text": "Thanks"}]},
        ],
        acv.system_text([{"type": "text", "text": "Sys"}]),
    )  # fmt: skip
    assert [m.role for m in msgs] == ["system", "user", "assistant", "tool", "user"]
    assert msgs[1].images == [PNG]
    assert msgs[2].thinking == "need a tool"
    assert msgs[2].tool_calls == [
        {"id": "toolu_1", "function": {"index": 0, "name": "weather", "arguments": {"c": "P"}}}
    ]
    assert (msgs[3].content, msgs[3].tool_name, msgs[3].tool_call_id) == (
        "sunny", "weather", "toolu_1")  # fmt: skip
    url = {"type": "image", "source": {"type": "url", "url": "https://x"}}
    with pytest.raises(InvalidRequestError, match="base64"):
        acv.convert_messages([{"role": "user", "content": [url]}], "")


def test_responses_input_items_become_chat_messages() -> None:
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "Price?"}]},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "use tool"}]},
        {"type": "function_call", "call_id": "c1", "name": "price", "arguments": '{"t":"A"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
    ]
    msgs = input_messages(items, "Be brief")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool"]
    assert msgs[2]["reasoning"] == "use tool"
    native = native_request(msgspec.convert({"model": "m", "input": items}, ResponsesRequest), 0)
    assert native.messages[1].tool_calls[0]["function"]["arguments"] == {"t": "A"}  # type: ignore[index]
    assert native.messages[2].tool_name == "price"
    with pytest.raises(ParamError, match="stateless"):
        native_request(ResponsesRequest(model="m", input="x", previous_response_id="r"), None)


# -- outputs ----------------------------------------------------------------------------------

FINAL: dict[str, Any] = {"done_reason": "stop", "prompt_eval_count": 7, "eval_count": 3}
LP = [Logprob(token="Hi", logprob=-0.1, bytes=[72, 105])]


def test_chat_stream_order_role_content_tool_calls_finish_usage_done() -> None:
    chunks = [chunk(thinking="hmm"), chunk("Hi", logprobs=LP), chunk(tool_calls=[CALL]),
              chunk(done=True, **FINAL)]  # fmt: skip

    async def run() -> list[bytes]:
        return [b async for b in chat_events(agen(chunks), "m", True)]

    events = sse_payloads(asyncio.run(run()))
    deltas = [e["choices"][0]["delta"] for e in events[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"reasoning": "hmm"}
    assert deltas[2] == {"content": "Hi"}
    assert events[2]["choices"][0]["logprobs"]["content"][0]["top_logprobs"] == []
    (call,) = deltas[3]["tool_calls"]
    assert call == {"index": 0, "id": "call_abc", "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "x"}'}}  # fmt: skip
    assert deltas[4] == {}
    assert events[4]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[5]["choices"] == []
    assert events[5]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert len(events) == 6  # ``data: [DONE]`` is the response's trailer
    assert len({e["id"] for e in events[:6]}) == 1


def test_chat_whole_response_with_tool_calls() -> None:
    chunks = [chunk("", tool_calls=[CALL]), chunk(done=True, **FINAL)]
    body = asyncio.run(chat_collect(agen(chunks), "m"))
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == '{"q": "x"}'
    assert body["id"].startswith("chatcmpl-")
    assert len(body["id"]) > 20


def test_anthropic_stream_events_and_whole_message() -> None:
    blocks = [_Block("thinking", text="hm"), _Block("text", text="Hel"),
              _Block("text", text="lo"), _Block("tool_use", call=CALL)]  # fmt: skip
    head = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m"}

    async def blocks_gen() -> AsyncIterator[_Block]:
        for b in blocks:
            yield b

    result = _Result(stop_reason="tool_use", input_tokens=5, output_tokens=4)

    async def run() -> list[bytes]:
        return [b async for b in _events(blocks_gen(), head, result)]

    raw = b"".join(asyncio.run(run())).decode()
    names = [line[7:] for line in raw.splitlines() if line.startswith("event: ")]
    assert names == ["message_start", "ping",
                     "content_block_start", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "content_block_start", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]  # fmt: skip
    whole = asyncio.run(_collect(blocks_gen(), head, result))
    assert [b["type"] for b in whole["content"]] == ["thinking", "text", "tool_use"]
    assert whole["content"][1]["text"] == "Hello"
    assert whole["content"][2]["input"] == {"q": "x"}
    assert whole["stop_reason"] == "tool_use"


def test_responses_events_build_the_same_output_as_the_whole_response() -> None:
    chunks = [chunk(thinking="hm"), chunk("Hel"), chunk("lo"), chunk(tool_calls=[CALL]),
              chunk(done=True, **FINAL)]  # fmt: skip
    streamed = ResponseBuilder("m", {})

    async def run() -> list[bytes]:
        return [b async for b in response_events(agen(chunks), streamed)]

    events = sse_payloads(asyncio.run(run()))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.reasoning_summary_text.delta" in kinds
    assert kinds.count("response.output_text.delta") == 2
    assert "response.function_call_arguments.done" in kinds
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][1]["content"][0]["text"] == "Hello"
    assert final["output"][2]["call_id"] == "call_abc"
    assert final["usage"]["total_tokens"] == 10
    whole = ResponseBuilder("m", {})
    for c in chunks:
        whole.consume(c)
    assert [i["type"] for i in whole.finish()["output"]] == ["reasoning", "message",
                                                              "function_call"]  # fmt: skip
