"""POST /api/chat: a conversation rendered through the model's template, streamed as NDJSON."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api import inference as inf
from power.api.schemas import ChatChunk, ChatRequest, Logprob, Message
from power.api.streaming import NDJSONResponse, prime
from power.errors import InvalidRequestError
from power.template.prompt import render_chat
from proto import Tokens

__all__ = ["routes"]

_encoder = msgspec.json.Encoder()
_ROLES = frozenset({"system", "user", "assistant", "tool"})


def _json(obj: object) -> Response:
    return Response(_encoder.encode(obj), media_type="application/json; charset=utf-8")


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


async def chat(request: Request) -> Response:
    started = time.perf_counter()
    req = await inf.decode_body(request, ChatRequest)
    if not req.model:
        raise InvalidRequestError("model is required")
    if req.format not in (None, ""):
        raise InvalidRequestError("format (structured output) is not supported yet")
    model = await inf.lookup_model(request, req.model)
    images = any(m.images for m in req.messages if m.images is not msgspec.UNSET)
    inf.check_common(model, think=req.think, top_logprobs=req.top_logprobs, images=images)
    if req.tools and "tools" not in model.capabilities:
        raise InvalidRequestError(f"{model.name} does not support tools")
    settings, supervisor = request.app.state.settings, request.app.state.supervisor
    prep = inf.prepare(settings, model, req.options, req.keep_alive)
    if not req.messages:
        reason = await inf.load_or_unload(supervisor, prep)
        return _json(
            ChatChunk(
                model=req.model,
                created_at=inf.created_at(),
                message=Message(role="assistant", content=""),
                done=True,
                done_reason=reason,
            )
        )
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
    events = inf.run(supervisor, prep, build, outcome)
    if req.stream:
        first, rest = await prime(_chunks(req, events, outcome))
        return NDJSONResponse(first, rest)
    return await _whole(req, events, outcome)


def _final(req: ChatRequest, outcome: inf.Outcome, content: str) -> ChatChunk:
    return ChatChunk(
        model=req.model,
        created_at=inf.created_at(),
        message=Message(role="assistant", content=content),
        done=True,
        done_reason=inf.done_reason(outcome),
        **outcome.metrics(),
    )


async def _chunks(
    req: ChatRequest, events: AsyncIterator[tuple[str, list[Tokens]]], outcome: inf.Outcome
) -> AsyncIterator[bytes]:
    try:
        async for text, tokens in events:
            chunk = ChatChunk(
                model=req.model,
                created_at=inf.created_at(),
                message=Message(role="assistant", content=text),
                done=False,
            )
            if req.logprobs:
                chunk.logprobs = inf.logprob_entries(tokens, req.top_logprobs)
            yield _encoder.encode(chunk) + b"\n"
        yield _encoder.encode(_final(req, outcome, "")) + b"\n"
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _whole(
    req: ChatRequest, events: AsyncIterator[tuple[str, list[Tokens]]], outcome: inf.Outcome
) -> Response:
    parts: list[str] = []
    probs: list[Logprob] = []
    try:
        async for text, tokens in events:
            parts.append(text)
            if req.logprobs:
                probs.extend(inf.logprob_entries(tokens, req.top_logprobs))
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    final = _final(req, outcome, "".join(parts))
    if req.logprobs:
        final.logprobs = probs
    return _json(final)


routes = [Route("/api/chat", chat, methods=["POST"])]
