"""POST /api/generate: completion, streamed as NDJSON or returned whole.

``generate_chunks`` is the native completion as a stream of ``GenerateChunk`` objects, which the
OpenAI ``/v1/completions`` layer converts from.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import msgspec
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api import inference as inf
from power.api.schemas import GenerateChunk, GenerateRequest, Logprob
from power.api.streaming import NDJSONResponse, prime
from power.errors import InvalidRequestError, ModelNotFoundError
from power.template.prompt import render_generate

__all__ = ["generate_chunks", "merge_generate", "routes"]

_encoder = msgspec.json.Encoder()


async def generate_chunks(
    state: State, req: GenerateRequest, *, started: float | None = None
) -> AsyncIterator[GenerateChunk]:
    """Validate, render and generate; bad input raises before the first chunk."""
    started = time.perf_counter() if started is None else started
    if not req.model:
        raise ModelNotFoundError("model '' not found")
    if req.raw and (req.template or req.system or req.context):
        raise InvalidRequestError("raw mode does not support template, system, or context")
    if req.format not in (None, ""):
        raise InvalidRequestError("format (structured output) is not supported yet")
    model = await inf.lookup_model(state, req.model)
    inf.check_common(model, think=req.think, top_logprobs=req.top_logprobs, images=bool(req.images))
    prep = inf.prepare(state.settings, model, req.options, req.keep_alive)
    if not req.prompt and not req.suffix and not req.images and not req.context:
        reason = await inf.load_or_unload(state.supervisor, prep)
        yield GenerateChunk(
            model=req.model, created_at=inf.created_at(), response="", done=True,
            done_reason=reason,
        )  # fmt: skip
        return
    if req.raw:
        text = req.prompt
    else:
        text = render_generate(
            model, req.prompt, system=req.system, suffix=req.suffix or None, template=req.template
        )
    build = inf.generate_message(
        prep,
        text,
        tokens=tuple(req.context or ()),
        add_bos=inf.add_bos_for(model, text),
        logprobs=req.top_logprobs if req.logprobs else -1,
        shift=req.shift,
        truncate=req.truncate,
    )
    outcome = inf.Outcome(started=started)
    events = inf.run(state.supervisor, prep, build, outcome)
    try:
        async for text_out, tokens in events:
            chunk = GenerateChunk(
                model=req.model, created_at=inf.created_at(), response=text_out, done=False
            )
            if req.logprobs:
                chunk.logprobs = inf.logprob_entries(tokens, req.top_logprobs)
            yield chunk
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    final = GenerateChunk(
        model=req.model,
        created_at=inf.created_at(),
        response="",
        done=True,
        done_reason=inf.done_reason(outcome),
        **outcome.metrics(),
    )
    if not req.raw and outcome.done is not None:
        final.context = list(outcome.done.context)
    yield final


def merge_generate(chunks: list[GenerateChunk]) -> GenerateChunk:
    """The non-streamed form: the response concatenated into the final chunk."""
    final = chunks[-1]
    final.response = "".join(c.response for c in chunks)
    probs: list[Logprob] = []
    for c in chunks:
        if c.logprobs is not msgspec.UNSET:
            probs.extend(c.logprobs)
    if probs:
        final.logprobs = probs
    return final


async def _lines(chunks: AsyncIterator[GenerateChunk]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield _encoder.encode(chunk) + b"\n"
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def generate(request: Request) -> Response:
    started = time.perf_counter()
    req = await inf.decode_body(request, GenerateRequest)
    chunks = generate_chunks(request.app.state, req, started=started)
    if req.stream:
        first, rest = await prime(_lines(chunks))
        return NDJSONResponse(first, rest)
    return inf.json_response(merge_generate([c async for c in chunks]))


routes = [Route("/api/generate", generate, methods=["POST"])]
