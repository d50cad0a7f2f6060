"""POST /v1/responses: OpenAI's Responses API, stateless, on top of the native ``chat_chunks``.

Input items (messages, ``function_call``, ``function_call_output``, ``reasoning``) become chat
messages; the output is a list of ``reasoning`` / ``message`` / ``function_call`` items, whole
or as named SSE events (``responses_stream``).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api.chat import chat_chunks
from power.api.openai import convert as cv
from power.api.openai import responses_stream as rs
from power.api.openai.sse import (
    ParamError,
    decode,
    keep_alive,
    openai_errors,
    sampling_options,
)
from power.api.response import json_response
from power.api.schemas import MAX_MESSAGES, ChatRequest
from power.api.streaming import StreamResponse, prime

__all__ = ["ResponsesRequest", "input_messages", "routes"]


class ResponsesRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    input: Any = None
    instructions: str | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    # A3S Power extensions:
    keep_alive: Any = None
    options: dict[str, Any] | None = None


def input_messages(value: Any, instructions: str | None) -> list[dict[str, Any]]:
    """Responses input items -> Chat Completions messages (then converted as usual)."""
    out: list[dict[str, Any]] = []
    if instructions:
        out.append({"role": "system", "content": instructions})
    if isinstance(value, str):
        return [*out, {"role": "user", "content": value}]
    if not isinstance(value, list):
        raise ParamError("input must be a string or an array of input items", param="input")
    if len(value) > MAX_MESSAGES:
        raise ParamError(f"input holds more than {MAX_MESSAGES} items", param="input")
    thinking = ""
    for i, item in enumerate(value):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "message" and isinstance(item.get("role"), str):
            msg = {"role": item["role"], "content": item.get("content") or ""}
            if thinking and item["role"] == "assistant":
                msg["reasoning"], thinking = thinking, ""
            out.append(msg)
        elif kind == "function_call":
            call = {"id": item.get("call_id") or item.get("id"), "type": "function",
                    "function": {"name": item.get("name"),
                                 "arguments": item.get("arguments") or "{}"}}  # fmt: skip
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                msg = {"role": "assistant", "content": None, "tool_calls": [call]}
                if thinking:
                    msg["reasoning"], thinking = thinking, ""
                out.append(msg)
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else msgspec.json.encode(output).decode()
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
        elif kind == "reasoning":
            parts = item.get("summary") or []
            if not isinstance(parts, list):
                raise ParamError("summary must be an array", param=f"input[{i}].summary")
            thinking += "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
            thinking += str(item.get("encrypted_content") or "")
        elif kind == "message":
            raise ParamError("a message item needs a role", param=f"input[{i}].role")
        else:
            raise ParamError(f"unsupported input item type: {kind!r}", param=f"input[{i}]")
    return out


def _tools(tools: list[Any] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function" or not tool.get("name"):
            raise ParamError("only function tools with a name are supported", param=f"tools[{i}]")
        fn = {k: tool[k] for k in ("name", "description", "parameters") if k in tool}
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(value: Any) -> tuple[str, str | None]:
    if isinstance(value, dict) and value.get("type") == "function" and "name" in value:
        return "function", str(value["name"])
    return cv.openai_tool_choice(value)


def _format(text: dict[str, Any] | None) -> Any:
    fmt = (text or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return cv.response_format({"type": "json_schema", "json_schema": fmt})
    return cv.response_format(fmt)


def native_request(req: ResponsesRequest, keep: Any) -> ChatRequest:
    if not req.model:
        raise ParamError("model is required", param="model")
    if req.previous_response_id or req.conversation:
        raise ParamError(
            "this server is stateless: send the whole conversation in input instead of "
            "previous_response_id or conversation",
            param="previous_response_id" if req.previous_response_id else "conversation",
        )
    messages = cv.convert_messages(input_messages(req.input, req.instructions))
    mode, name = _tool_choice(req.tool_choice)
    tools, instruction = cv.apply_tool_choice(_tools(req.tools), mode, name)
    opts = sampling_options(
        req.options, temperature=req.temperature, top_p=req.top_p,
        max_tokens=req.max_output_tokens,
    )  # fmt: skip
    effort = (req.reasoning or {}).get("effort")
    return ChatRequest(
        model=req.model, messages=cv.add_instruction(messages, instruction), tools=tools,
        format=_format(req.text), keep_alive=keep, options=opts,
        think=cv.think_from_effort(effort, "reasoning.effort"),
    )  # fmt: skip


@openai_errors
async def create_response(request: Request) -> Response:
    started = time.perf_counter()
    req = await decode(request, ResponsesRequest)
    native = native_request(req, keep_alive(request, req.keep_alive))
    echo = {
        "instructions": req.instructions, "tools": req.tools or [],
        "tool_choice": req.tool_choice or "auto", "temperature": req.temperature,
        "top_p": req.top_p, "max_output_tokens": req.max_output_tokens,
        "parallel_tool_calls": req.parallel_tool_calls is not False,
        "metadata": req.metadata or {}, "reasoning": req.reasoning,
        "text": req.text or {"format": {"type": "text"}}, "previous_response_id": None,
        "store": False, "truncation": "disabled",
    }  # fmt: skip
    builder = rs.ResponseBuilder(req.model, echo)
    chunks = chat_chunks(request.app.state, native, started=started)
    if not req.stream:
        async for chunk in chunks:
            builder.consume(chunk)
        return json_response(builder.finish())
    first, rest = await prime(rs.events(chunks, builder))
    return StreamResponse(
        first, rest, media_type="text/event-stream", error_line=builder.failed_event
    )


routes = [Route("/v1/responses", create_response, methods=["POST"])]
