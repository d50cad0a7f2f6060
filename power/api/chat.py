"""POST /api/chat: a conversation rendered through the model's template, streamed as NDJSON.

``chat_chunks`` is the native chat as a stream of ``ChatChunk`` objects; the OpenAI and
Anthropic layers convert from it, as Ollama's middleware converts from its native handler.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api import inference as inf
from power.api.schemas import ChatChunk, ChatRequest, Logprob, Message
from power.api.streaming import NDJSONResponse, prime
from power.errors import InvalidRequestError
from power.template.prompt import render_chat

__all__ = ["chat_chunks", "merge_chat", "routes"]

_encoder = msgspec.json.Encoder()
_ROLES = frozenset({"system", "user", "assistant", "tool"})


def _messages(req: ChatRequest) -> list[dict[str, Any]]:
    out = []
    for msg in req.messages:
        role = msg.role.lower()
        if role not in _ROLES:
            raise InvalidRequestError(f"invalid role: {msg.role!r}")
        as_dict: dict[str, Any] = msgspec.to_builtins(msg)
        as_dict["role"] = role
        out.append(as_dict)
    return out


async def chat_chunks(
    state: State, req: ChatRequest, *, started: float | None = None
) -> AsyncIterator[ChatChunk]:
    """Validate, render and generate; bad input raises before the first chunk."""
    started = time.perf_counter() if started is None else started
    if not req.model:
        raise InvalidRequestError("model is required")
    if req.format not in (None, ""):
        raise InvalidRequestError("format (structured output) is not supported yet")
    model = await inf.lookup_model(state, req.model)
    images = any(m.images for m in req.messages if m.images is not msgspec.UNSET)
    inf.check_common(model, think=req.think, top_logprobs=req.top_logprobs, images=images)
    if req.tools and "tools" not in model.capabilities:
        raise InvalidRequestError(f"{model.name} does not support tools")
    prep = inf.prepare(state.settings, model, req.options, req.keep_alive)
    if not req.messages:
        reason = await inf.load_or_unload(state.supervisor, prep)
        yield ChatChunk(
            model=req.model,
            created_at=inf.created_at(),
            message=Message(role="assistant", content=""),
            done=True,
            done_reason=reason,
        )
        return
    text = render_chat(model, _messages(req), tools=req.tools, think=req.think)
    build = inf.generate_message(
        prep,
        text,
        add_bos=inf.add_bos_for(model, text),
        logprobs=req.top_logprobs if req.logprobs else -1,
        shift=req.shift,
        truncate=req.truncate,
    )
    outcome = inf.Outcome(started=started)
    events = inf.run(state.supervisor, prep, build, outcome)
    try:
        async for text_out, tokens in events:
            chunk = ChatChunk(
                model=req.model,
                created_at=inf.created_at(),
                message=Message(role="assistant", content=text_out),
                done=False,
            )
            if req.logprobs:
                chunk.logprobs = inf.logprob_entries(tokens, req.top_logprobs)
            yield chunk
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    yield ChatChunk(
        model=req.model,
        created_at=inf.created_at(),
        message=Message(role="assistant", content=""),
        done=True,
        done_reason=inf.done_reason(outcome),
        **outcome.metrics(),
    )


def merge_chat(chunks: list[ChatChunk]) -> ChatChunk:
    """The non-streamed form: content concatenated into the final chunk, logprobs joined."""
    final = chunks[-1]
    final.message.content = "".join(c.message.content for c in chunks)
    probs: list[Logprob] = []
    for c in chunks:
        if c.logprobs is not msgspec.UNSET:
            probs.extend(c.logprobs)
    if probs:
        final.logprobs = probs
    return final


async def _lines(chunks: AsyncIterator[ChatChunk]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield _encoder.encode(chunk) + b"\n"
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def chat(request: Request) -> Response:
    started = time.perf_counter()
    req = await inf.decode_body(request, ChatRequest)
    chunks = chat_chunks(request.app.state, req, started=started)
    if req.stream:
        first, rest = await prime(_lines(chunks))
        return NDJSONResponse(first, rest)
    collected = [c async for c in chunks]
    return inf.json_response(merge_chat(collected))


routes = [Route("/api/chat", chat, methods=["POST"])]
