"""POST /v1/chat/completions on top of the native ``chat_chunks``.

Streaming follows OpenAI's order exactly: a role chunk, content / reasoning / tool-call deltas,
a finish chunk with an empty delta, the usage chunk when ``stream_options.include_usage`` is
set, then ``data: [DONE]``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api.chat import chat_chunks
from power.api.openai import convert as cv
from power.api.openai.sse import (
    DONE,
    ParamError,
    decode,
    keep_alive,
    new_id,
    openai_errors,
    sampling_options,
    sse,
    sse_error,
    stop_list,
)
from power.api.response import json_response
from power.api.schemas import (
    MAX_MESSAGES,
    ChatChunk,
    ChatRequest,
    GenerateChunk,
    Logprob,
    prompt_tokens,
)
from power.api.streaming import StreamResponse, prime

__all__ = ["ChatCompletionRequest", "native_chat_request", "routes"]

FINGERPRINT = "fp_a3s_power"


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    messages: Annotated[list[Any], msgspec.Meta(max_length=MAX_MESSAGES)] = msgspec.field(
        default_factory=list
    )
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: Any = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    response_format: Any = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    reasoning_effort: Any = None
    reasoning: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    n: int | None = None
    # A3S Power extensions (Ollama has no way to set these through /v1):
    keep_alive: Any = None
    options: dict[str, Any] | None = None
    think: bool | str | None = None


def native_chat_request(req: ChatCompletionRequest, keep: Any) -> ChatRequest:
    if not req.model:
        raise ParamError("model is required", param="model")
    if req.n is not None and req.n < 1:
        raise ParamError("n must be at least 1", param="n")
    if req.n not in (None, 1):
        raise ParamError("n > 1 is not supported: only one choice can be generated", param="n")
    if req.max_completion_tokens is not None and req.max_completion_tokens < 0:
        raise ParamError(
            "max_completion_tokens must not be negative", param="max_completion_tokens"
        )
    if req.top_logprobs is not None and not 0 <= req.top_logprobs <= 20:
        raise ParamError("top_logprobs must be between 0 and 20", param="top_logprobs")
    if req.top_logprobs is not None and not req.logprobs:
        raise ParamError("top_logprobs requires logprobs: true", param="top_logprobs")
    messages = cv.convert_messages(req.messages)
    mode, name = cv.openai_tool_choice(req.tool_choice)
    tools, instruction = cv.apply_tool_choice(cv.convert_tools(req.tools), mode, name)
    effort = req.reasoning.get("effort") if req.reasoning else None
    think = cv.think_from_effort(req.reasoning_effort, "reasoning_effort")
    if think is None:
        think = cv.think_from_effort(effort, "reasoning.effort")
    opts = sampling_options(
        req.options,
        temperature=req.temperature,
        top_p=req.top_p,
        max_tokens=req.max_completion_tokens
        if req.max_completion_tokens is not None
        else req.max_tokens,
        seed=req.seed,
        stop=stop_list(req.stop),
        frequency_penalty=req.frequency_penalty,
        presence_penalty=req.presence_penalty,
    )
    return ChatRequest(
        model=req.model,
        messages=cv.add_instruction(messages, instruction),
        tools=tools,
        stream=req.stream,
        format=cv.response_format(req.response_format),
        keep_alive=keep,
        options=opts,
        think=req.think if think is None else think,
        logprobs=bool(req.logprobs),
        top_logprobs=req.top_logprobs or 0,
    )


def openai_logprobs(entries: list[Logprob]) -> list[dict[str, Any]]:
    out = []
    for e in entries:
        tops = [] if e.top_logprobs is msgspec.UNSET else e.top_logprobs
        out.append({
            "token": e.token, "logprob": e.logprob, "bytes": e.bytes,
            "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": t.bytes}
                             for t in tops],
        })  # fmt: skip
    return out


def usage_of(chunk: ChatChunk | GenerateChunk | None) -> dict[str, Any]:
    """OpenAI's ``usage`` from a final native chunk (chat and legacy completions alike):
    ``prompt_tokens`` is the whole prompt, and ``prompt_tokens_details.cached_tokens`` (present
    when some was reused from the KV cache) the part of it that was not evaluated again."""
    prompt, cached = prompt_tokens(chunk)
    completion = (chunk.eval_count or 0) if chunk is not None else 0
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}  # fmt: skip
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


@dataclass
class _Turn:
    """What one completion produced, gathered across native chunks."""

    id: str = field(default_factory=lambda: new_id("chatcmpl-"))
    created: int = field(default_factory=lambda: int(time.time()))
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    final: ChatChunk | None = None

    def calls_of(self, chunk: ChatChunk) -> list[dict[str, Any]]:
        calls = chunk.message.tool_calls
        if calls is msgspec.UNSET or not calls:
            return []
        out = []
        for native in calls:
            index = len(self.tool_calls)
            call = cv.openai_tool_call(native, index, new_id("call_", 8))
            self.tool_calls.append(call)
            out.append(call)
        return out

    def finish_reason(self) -> str:
        if self.tool_calls:
            return "tool_calls"
        reason = self.final.done_reason if self.final is not None else "stop"
        return "length" if reason == "length" else "stop"

    def head(self, model: str) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": model, "system_fingerprint": FINGERPRINT}  # fmt: skip


async def _collect(chunks: AsyncIterator[ChatChunk], model: str) -> dict[str, Any]:
    turn = _Turn()
    async for chunk in chunks:
        turn.content.append(chunk.message.content)
        if chunk.message.thinking:
            turn.reasoning.append(chunk.message.thinking)  # type: ignore[arg-type]
        turn.calls_of(chunk)
        if chunk.logprobs:
            turn.logprobs.extend(openai_logprobs(chunk.logprobs))  # type: ignore[arg-type]
        if chunk.done:
            turn.final = chunk
    content = "".join(turn.content)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if turn.reasoning:
        message["reasoning"] = "".join(turn.reasoning)
    if turn.tool_calls:
        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"}
                                 for c in turn.tool_calls]  # fmt: skip
        message["content"] = content or None
    choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None,
                              "finish_reason": turn.finish_reason()}  # fmt: skip
    if turn.logprobs:
        choice["logprobs"] = {"content": turn.logprobs}
    return {
        "id": turn.id, "object": "chat.completion", "created": turn.created, "model": model,
        "system_fingerprint": FINGERPRINT, "choices": [choice],
        "usage": usage_of(turn.final),
    }  # fmt: skip


async def _events(
    chunks: AsyncIterator[ChatChunk], model: str, include_usage: bool
) -> AsyncIterator[bytes]:
    turn = _Turn()
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def event(delta: dict[str, Any], finish: str | None = None, lp: Any = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}
        return sse({**turn.head(model), "choices": [choice], **extra})

    try:
        first = True
        async for chunk in chunks:
            if first:  # after the first native chunk, so errors before it are real statuses
                first = False
                yield event({"role": "assistant", "content": ""})
            msg = chunk.message
            if msg.thinking:
                yield event({"reasoning": msg.thinking})
            lp = {"content": openai_logprobs(chunk.logprobs)} if chunk.logprobs else None
            if msg.content or lp:
                yield event({"content": msg.content}, lp=lp)
            calls = turn.calls_of(chunk)
            if calls:
                yield event({"tool_calls": calls})
            if chunk.done:
                turn.final = chunk
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    yield event({}, turn.finish_reason())
    if include_usage and turn.final is not None:
        yield sse({**turn.head(model), "choices": [], "usage": usage_of(turn.final)})


@openai_errors
async def chat_completions(request: Request) -> Response:
    started = time.perf_counter()
    req = await decode(request, ChatCompletionRequest)
    native = native_chat_request(req, keep_alive(request, req.keep_alive))
    chunks = chat_chunks(request.app.state, native, started=started)
    if not req.stream:
        return json_response(await _collect(chunks, req.model))
    include_usage = bool((req.stream_options or {}).get("include_usage"))
    first, rest = await prime(_events(chunks, req.model, include_usage))
    return StreamResponse(
        first, rest, media_type="text/event-stream", error_line=sse_error, trailer=DONE
    )


routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
