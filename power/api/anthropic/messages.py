"""POST /v1/messages (Anthropic Messages API) and /v1/messages/count_tokens, on ``chat_chunks``.

Streams use Anthropic's named events: ``message_start``, ``ping``, then per content block
``content_block_start`` / ``content_block_delta`` / ``content_block_stop``, then
``message_delta`` (stop reason and usage) and ``message_stop``; a failure after the start is an
``error`` event that ends the stream.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api import response as reply
from power.api import semantics as sem
from power.api import tokens
from power.api.anthropic import convert as cv
from power.api.chat import chat_chunks
from power.api.openai.convert import add_instruction, think_from_effort
from power.api.openai.sse import decode, keep_alive, sampling_options, sse
from power.api.schemas import MAX_MESSAGES, ChatChunk, ChatRequest, prompt_tokens
from power.api.streaming import StreamResponse, prime
from power.errors import InvalidRequestError, PowerError
from power.template.prompt import render_chat

__all__ = ["routes"]


class MessagesRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    max_tokens: int | None = None
    messages: Annotated[list[Any], msgspec.Meta(max_length=MAX_MESSAGES)] = msgspec.field(
        default_factory=list
    )
    system: Any = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None
    metadata: Any = None
    # A3S Power extensions:
    keep_alive: Any = None
    options: dict[str, Any] | None = None


async def _native(state: State, req: MessagesRequest, keep: Any, *, count: bool) -> ChatRequest:
    if not req.model:
        raise InvalidRequestError("model: field required")
    if not count and (req.max_tokens is None or req.max_tokens <= 0):
        raise InvalidRequestError("max_tokens: a positive integer is required")
    messages = cv.convert_messages(req.messages, cv.system_text(req.system))
    tools, instruction = cv.tool_choice(cv.convert_tools(req.tools), req.tool_choice)
    model = await sem.lookup_model(state, req.model)
    think: bool | str | None = None
    effort = (req.output_config or {}).get("effort")
    if "thinking" not in model.capabilities:
        pass  # a thinking request to a model that cannot think is dropped, as Ollama does
    elif req.thinking is not None:
        think = req.thinking.get("type") in ("enabled", "adaptive")
    elif effort is not None:
        think = think_from_effort(effort, "output_config.effort")
    else:
        think = False  # Anthropic's models think only when asked to
    opts = sampling_options(
        req.options, temperature=req.temperature, top_p=req.top_p, max_tokens=req.max_tokens,
        top_k=req.top_k,
    )  # fmt: skip
    if req.stop_sequences:  # added to the model's own stop strings, which still end a turn
        opts["stop"] = [*cv.stop_strings(opts.get("stop", model.parameters.get("stop"))),
                        *req.stop_sequences]  # fmt: skip
    return ChatRequest(
        model=req.model, messages=add_instruction(messages, instruction), tools=tools,
        keep_alive=keep, options=opts, think=think,
    )  # fmt: skip


async def _input_tokens(state: State, native: ChatRequest) -> int:
    model = await sem.lookup_model(state, native.model)
    images = any(m.images for m in native.messages)
    think = sem.check_common(
        model, requested=native.model, think=native.think, top_logprobs=0, images=images
    )
    messages = [msgspec.to_builtins(m) for m in native.messages]
    text = await asyncio.to_thread(
        render_chat, model, messages, tools=native.tools, think=think, renderer=state.renderer
    )
    ids = await tokens.tokenize(state, model, text, add_special=sem.add_bos_for(model, text))
    return len(ids)


@dataclass
class _Result:
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0


@dataclass
class _Block:
    kind: str  # "thinking", "text" or "tool_use"
    text: str = ""
    call: dict[str, Any] = field(default_factory=dict)


async def _blocks(
    state: State, native: ChatRequest, stops: list[str], result: _Result
) -> AsyncIterator[_Block]:
    """Content pieces in order; ``result`` is complete when the iterator ends. The runner
    stops at a stop sequence (sent as the ``stop`` option) and says which one it was."""
    ended: list[str] = []
    final: ChatChunk | None = None
    chunks = chat_chunks(state, native, on_end=lambda end: ended.append(end.stop))
    try:
        async for chunk in chunks:
            msg = chunk.message
            if msg.thinking:
                yield _Block("thinking", text=msg.thinking)  # type: ignore[arg-type]
            if msg.content:
                yield _Block("text", text=msg.content)
            for call in msg.tool_calls or []:
                result.tool_calls += 1
                yield _Block("tool_use", call=call)
            if chunk.done:
                final = chunk
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    if final is None:
        return
    result.input_tokens = prompt_tokens(final)[0]
    result.output_tokens = final.eval_count or 0
    if ended and ended[0] and ended[0] in stops:
        result.stop_reason, result.stop_sequence = "stop_sequence", ended[0]
        return
    if final.done_reason == "length":
        result.stop_reason = "max_tokens"
    if result.tool_calls:
        result.stop_reason = "tool_use"


def _tool_block(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function", {})
    return {"type": "tool_use", "id": call.get("id") or "toolu_" + secrets.token_hex(12),
            "name": fn.get("name", ""), "input": fn.get("arguments", {})}  # fmt: skip


async def _collect(blocks: AsyncIterator[_Block], head: dict[str, Any], result: _Result) -> Any:
    content: list[dict[str, Any]] = []
    async for b in blocks:
        last = content[-1] if content else None
        if b.kind == "tool_use":
            content.append(_tool_block(b.call))
        elif last is not None and last["type"] == b.kind:
            last[b.kind] += b.text
        elif b.kind == "thinking":
            content.append({"type": "thinking", "thinking": b.text, "signature": ""})
        else:
            content.append({"type": "text", "text": b.text})
    return {**head, "content": content, "stop_reason": result.stop_reason,
            "stop_sequence": result.stop_sequence,
            "usage": {"input_tokens": result.input_tokens,
                      "output_tokens": result.output_tokens}}  # fmt: skip


async def _events(
    blocks: AsyncIterator[_Block], head: dict[str, Any], result: _Result
) -> AsyncIterator[bytes]:
    index, open_kind = -1, None
    try:
        async for b in blocks:
            if index < 0:  # after the first piece, so errors before it are real statuses
                start = {**head, "content": [], "stop_reason": None, "stop_sequence": None,
                         "usage": {"input_tokens": 0, "output_tokens": 0}}  # fmt: skip
                yield sse({"type": "message_start", "message": start}, "message_start")
                yield sse({"type": "ping"}, "ping")
            if open_kind is not None and (b.kind == "tool_use" or b.kind != open_kind):
                yield sse({"type": "content_block_stop", "index": index}, "content_block_stop")
                open_kind = None
            if open_kind is None:
                index += 1
                open_kind = b.kind
                block: dict[str, Any] = {"type": "text", "text": ""}
                if b.kind == "thinking":
                    block = {"type": "thinking", "thinking": "", "signature": ""}
                elif b.kind == "tool_use":
                    block = {**_tool_block(b.call), "input": {}}
                start_ev = {"type": "content_block_start", "index": index, "content_block": block}
                yield sse(start_ev, "content_block_start")
            if b.kind == "tool_use":
                args = json.dumps(b.call.get("function", {}).get("arguments", {}))
                delta = {"type": "input_json_delta", "partial_json": args}
            elif b.kind == "thinking":
                delta = {"type": "thinking_delta", "thinking": b.text}
            else:
                delta = {"type": "text_delta", "text": b.text}
            ev = {"type": "content_block_delta", "index": index, "delta": delta}
            yield sse(ev, "content_block_delta")
    finally:
        await blocks.aclose()  # type: ignore[attr-defined]
    if index < 0:
        start = {**head, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {"input_tokens": 0, "output_tokens": 0}}  # fmt: skip
        yield sse({"type": "message_start", "message": start}, "message_start")
    if open_kind is not None:
        yield sse({"type": "content_block_stop", "index": index}, "content_block_stop")
    end = {"stop_reason": result.stop_reason, "stop_sequence": result.stop_sequence}
    usage = {"input_tokens": result.input_tokens, "output_tokens": result.output_tokens}
    yield sse({"type": "message_delta", "delta": end, "usage": usage}, "message_delta")
    yield sse({"type": "message_stop"}, "message_stop")


def _sse_error(exc: PowerError) -> bytes:
    return sse(cv.anthropic_error_body(exc), "error")


@cv.anthropic_errors
async def messages(request: Request) -> Response:
    req = await decode(request, MessagesRequest)
    state = request.app.state
    native = await _native(state, req, keep_alive(request, req.keep_alive), count=False)
    head = {"id": "msg_" + secrets.token_hex(12), "type": "message", "role": "assistant",
            "model": req.model}  # fmt: skip
    result = _Result()
    blocks = _blocks(state, native, req.stop_sequences or [], result)
    if not req.stream:
        return reply.json_response(await _collect(blocks, head, result))
    first, rest = await prime(_events(blocks, head, result))
    return StreamResponse(first, rest, media_type="text/event-stream", error_line=_sse_error)


@cv.anthropic_errors
async def count_tokens(request: Request) -> Response:
    req = await decode(request, MessagesRequest)
    state = request.app.state
    native = await _native(state, req, keep_alive(request, req.keep_alive), count=True)
    count = await _input_tokens(state, native)
    return reply.json_response({"input_tokens": count})


routes = [
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
