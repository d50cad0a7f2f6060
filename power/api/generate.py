"""POST /api/generate: completion, streamed as NDJSON or returned whole."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api import inference as inf
from power.api.schemas import GenerateChunk, GenerateRequest, Logprob
from power.api.streaming import NDJSONResponse, prime
from power.errors import InvalidRequestError, ModelNotFoundError
from power.template.prompt import render_generate
from proto import Tokens

__all__ = ["routes"]

_encoder = msgspec.json.Encoder()


def _json(obj: object) -> Response:
    return Response(_encoder.encode(obj), media_type="application/json; charset=utf-8")


async def generate(request: Request) -> Response:
    started = time.perf_counter()
    req = await inf.decode_body(request, GenerateRequest)
    if not req.model:
        raise ModelNotFoundError("model '' not found")
    if req.raw and (req.template or req.system or req.context):
        raise InvalidRequestError("raw mode does not support template, system, or context")
    if req.format not in (None, ""):
        raise InvalidRequestError("format (structured output) is not supported yet")
    model = await inf.lookup_model(request, req.model)
    inf.check_common(model, think=req.think, top_logprobs=req.top_logprobs, images=bool(req.images))
    settings, supervisor = request.app.state.settings, request.app.state.supervisor
    prep = inf.prepare(settings, model, req.options, req.keep_alive)
    if not req.prompt and not req.suffix and not req.images and not req.context:
        reason = await inf.load_or_unload(supervisor, prep)
        return _json(
            GenerateChunk(
                model=req.model,
                created_at=inf.created_at(),
                response="",
                done=True,
                done_reason=reason,
            )
        )
    if req.raw:
        text = req.prompt
    else:
        text = render_generate(
            model, req.prompt, system=req.system, suffix=req.suffix or None, template=req.template
        )
    logprobs = req.top_logprobs if req.logprobs else -1
    build = inf.generate_message(
        prep,
        text,
        tokens=tuple(req.context or ()),
        add_bos=inf.add_bos_for(model, text),
        logprobs=logprobs,
        shift=req.shift,
        truncate=req.truncate,
    )
    outcome = inf.Outcome(started=started)
    events = inf.run(supervisor, prep, build, outcome)
    if req.stream:
        first, rest = await prime(_chunks(req, events, outcome))
        return NDJSONResponse(first, rest)
    return await _whole(req, events, outcome)


def _final(req: GenerateRequest, outcome: inf.Outcome, response: str) -> GenerateChunk:
    chunk = GenerateChunk(
        model=req.model,
        created_at=inf.created_at(),
        response=response,
        done=True,
        done_reason=inf.done_reason(outcome),
        **outcome.metrics(),
    )
    if not req.raw and outcome.done is not None:
        chunk.context = list(outcome.done.context)
    return chunk


async def _chunks(
    req: GenerateRequest, events: AsyncIterator[tuple[str, list[Tokens]]], outcome: inf.Outcome
) -> AsyncIterator[bytes]:
    try:
        async for text, tokens in events:
            chunk = GenerateChunk(
                model=req.model, created_at=inf.created_at(), response=text, done=False
            )
            if req.logprobs:
                chunk.logprobs = inf.logprob_entries(tokens, req.top_logprobs)
            yield _encoder.encode(chunk) + b"\n"
        yield _encoder.encode(_final(req, outcome, "")) + b"\n"
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _whole(
    req: GenerateRequest, events: AsyncIterator[tuple[str, list[Tokens]]], outcome: inf.Outcome
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


routes = [Route("/api/generate", generate, methods=["POST"])]
