"""POST /api/generate: completion, streamed as NDJSON or returned whole.

``generate_chunks`` is the native completion as a stream of ``GenerateChunk`` objects, which the
OpenAI ``/v1/completions`` layer converts from.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api import body, pipeline
from power.api import response as reply
from power.api import semantics as sem
from power.api.schemas import GenerateChunk, GenerateRequest
from power.api.streaming import NDJSONResponse, ndjson_lines, prime
from power.errors import InvalidRequestError, ModelNotFoundError
from power.store.model import LocalModel
from power.template.prompt import render_generate

__all__ = ["generate_chunks", "merge_generate", "routes"]


async def generate_chunks(
    state: State, req: GenerateRequest, *, started: float | None = None
) -> AsyncIterator[GenerateChunk]:
    """Validate, render and generate; bad input raises before the first chunk.

    Thinking goes to ``thinking``. For models with the ``tools`` capability whose template
    teaches a tagged tool-call format, calls the model writes come back in ``tool_calls``.
    ``format`` is not applied while the model is thinking (see ``chat_chunks``).
    """
    started = time.perf_counter() if started is None else started
    if not req.model:
        raise ModelNotFoundError("model '' not found")
    if req.raw and (req.template or req.system or req.context):
        raise InvalidRequestError("raw mode does not support template, system, or context")
    json_schema = sem.json_schema_for(req.format)
    model = await sem.lookup_model(state, req.model)
    _check_context(model, req.context)
    think = sem.check_common(
        model,
        requested=req.model,
        think=req.think,
        top_logprobs=req.top_logprobs,
        images=bool(req.images),
        endpoint="generate",
        suffix=bool(req.suffix),
    )
    images = sem.image_payload(await sem.read_images(req.images or (), "images"))
    prep = pipeline.prepare(state.settings, model, req.options, req.keep_alive)
    if not req.prompt and not req.suffix and not req.images and not req.context:
        reason = await pipeline.load_or_unload(state.runners, prep)
        yield _chunk(req.model, "", done=True, done_reason=reason)
        return
    if req.raw:
        text = req.prompt
    else:
        text = await asyncio.to_thread(  # bounded work, but not on the event loop
            render_generate,
            model,
            req.prompt,
            system=req.system,
            suffix=req.suffix or None,
            template=req.template,
            images=req.images,
            think=think,
            renderer=state.renderer,
        )
    if req.debug_render_only:
        yield _chunk(req.model, "", done=False, debug_info=reply.debug_info(text, images))
        return
    parser = sem.output_parser(
        model,
        text,
        think=think,
        tools=None,
        template=req.template,
        tagged_tools_only=not json_schema,
    )
    build = pipeline.generate_message(
        prep,
        text,
        tokens=tuple(req.context or ()),
        images=images,
        add_bos=sem.add_bos_for(model, text),
        logprobs=req.top_logprobs if req.logprobs else -1,
        shift=req.shift,
        truncate=req.truncate,
        json_schema="" if parser.thinking is not None else json_schema,
    )
    top = req.top_logprobs if req.logprobs else None
    async for item in pipeline.generation(
        state.runners, prep, build, parser, kind="generate", top_logprobs=top, started=started
    ):
        if isinstance(item, pipeline.Finished):
            final = _chunk(req.model, "", done=True, done_reason=item.done_reason, **item.metrics)
            if item.logprobs:
                final.logprobs = item.logprobs
            if not req.raw and item.context is not None:
                final.context = item.context
            yield final
            return
        got = item.parsed
        chunk = _chunk(req.model, got.content, done=False)
        if got.thinking:
            chunk.thinking = got.thinking
        if got.tool_calls:
            chunk.tool_calls = got.tool_calls
        if req.logprobs:
            chunk.logprobs = item.logprobs
        yield chunk


def _check_context(model: LocalModel, context: list[int] | None) -> None:
    """A 400 for a ``context`` token id past the model's vocabulary (llama.cpp fails on it)."""
    n_vocab = model.gguf.vocab_size
    if not context or n_vocab is None or n_vocab <= 0:
        return
    bad = next((t for t in context if t >= n_vocab), None)
    if bad is not None:
        raise InvalidRequestError(
            f"context holds token id {bad}, past the {n_vocab} tokens of {model.name}"
        )


def _chunk(model: str, response: str, *, done: bool, **fields: Any) -> GenerateChunk:
    return GenerateChunk(
        model=model, created_at=reply.created_at(), response=response, done=done, **fields
    )


def merge_generate(chunks: list[GenerateChunk]) -> GenerateChunk:
    """The non-streamed form: response and thinking concatenated into the final chunk, tool
    calls collected, logprobs joined."""
    final = chunks[-1]
    final.response = "".join(c.response for c in chunks)
    thinking = "".join(t for c in chunks if isinstance(t := c.thinking, str))
    if thinking:
        final.thinking = thinking
    calls = reply.joined(c.tool_calls for c in chunks)
    probs = reply.joined(c.logprobs for c in chunks)
    if calls:
        final.tool_calls = calls
    if probs:
        final.logprobs = probs
    return final


async def generate(request: Request) -> Response:
    started = time.perf_counter()
    req = await body.decode_body(request, GenerateRequest)
    chunks = generate_chunks(request.app.state, req, started=started)
    if req.stream and not req.debug_render_only:  # the rendered prompt is one JSON object
        first, rest = await prime(ndjson_lines(chunks))
        return NDJSONResponse(first, rest)
    return reply.json_response(merge_generate([c async for c in chunks]))


routes = [Route("/api/generate", generate, methods=["POST"])]
