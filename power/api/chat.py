"""POST /api/chat: a conversation rendered through the model's template, streamed as NDJSON.

``chat_chunks`` is the native chat as a stream of ``ChatChunk`` objects; the OpenAI and
Anthropic layers convert from it, as Ollama's middleware converts from its native handler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api import body, pipeline
from power.api import response as reply
from power.api import semantics as sem
from power.api.schemas import ChatChunk, ChatRequest, Message
from power.api.streaming import NDJSONResponse, ndjson_lines, prime
from power.errors import InvalidRequestError
from power.store.model import LocalModel
from power.supervisor.service import Runners
from power.template.prompt import render_chat
from proto import MAX_TOKENIZE_BYTES

__all__ = ["chat_chunks", "merge_chat", "routes"]

log = logging.getLogger(__name__)

_ROLES = frozenset({"system", "user", "assistant", "tool"})
IMAGE_TOKENS = 768  # what an image is assumed to take of the context (Ollama's estimate)


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


async def _fit_history(
    state: State,
    prep: pipeline.Prepared,
    messages: list[dict[str, Any]],
    text: str,
    tools: list[dict[str, Any]] | None,
    think: bool | str | None,
) -> tuple[str, list[dict[str, Any]]]:
    """The prompt with the oldest history dropped until it fits the context (Ollama's
    ``truncate``), and the messages kept: system messages and the latest message always stay.
    If even that is too long, the runner's own truncation handles the rest. Each image counts
    as ``IMAGE_TOKENS``.

    A token is never shorter than a byte, so a prompt with fewer bytes than the context needs
    no counting; otherwise the runner counts, and a binary search finds how much to drop.
    """
    model, n_ctx = prep.model, prep.options.load.n_ctx
    if len(text.encode()) + 2 + IMAGE_TOKENS * _count_images(messages) < n_ctx:
        return text, messages
    droppable = [i for i, m in enumerate(messages[:-1]) if m["role"] != "system"]
    if not droppable:
        return text, messages

    def kept(drop: int) -> list[dict[str, Any]]:
        gone = set(droppable[:drop])
        return [m for i, m in enumerate(messages) if i not in gone]

    async def render(drop: int) -> str:
        return await _render(state, model, kept(drop), tools, think)

    runners: Runners = state.runners
    # keep_alive None: counting must not apply (or expire on) the request's keep_alive.
    n_ctx = min(n_ctx, (await runners.load(model, prep.options.load, None)).n_ctx)

    async def fits(drop: int, candidate: str) -> bool:
        if len(candidate.encode()) > MAX_TOKENIZE_BYTES:
            return False  # more than a runner tokenizes, and far more than a context holds
        add = sem.add_bos_for(model, candidate)
        n = await pipeline.count_tokens(runners, prep, candidate, add_special=add)
        return n + IMAGE_TOKENS * _count_images(kept(drop)) < n_ctx

    if await fits(0, text):
        return text, messages
    low, high = 1, len(droppable)  # the answer is in [low, high]; high may not fit either
    while low < high:
        mid = (low + high) // 2
        if await fits(mid, await render(mid)):
            high = mid
        else:
            low = mid + 1
    dropped = await render(low)
    log.info("chat history truncated: %d of %d messages dropped", low, len(messages))
    return dropped, kept(low)


async def _render(
    state: State,
    model: LocalModel,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    think: bool | str | None,
) -> str:
    """The prompt for these messages, rendered off the event loop (a Jinja template in the
    app's template sandbox)."""
    return await asyncio.to_thread(
        render_chat, model, messages, tools=tools, think=think, renderer=state.renderer
    )


def _count_images(messages: list[dict[str, Any]]) -> int:
    return sum(len(m.get("images") or ()) for m in messages)


async def chat_chunks(
    state: State,
    req: ChatRequest,
    *,
    started: float | None = None,
    on_end: Callable[[pipeline.Finished], None] | None = None,
) -> AsyncIterator[ChatChunk]:
    """Validate, render and generate; bad input raises before the first chunk. ``on_end``
    sees how the generation ended (what Ollama's final chunk has no field for) before it.

    Thinking goes to ``message.thinking`` and parsed tool calls to ``message.tool_calls`` (each
    call set whole, in its own chunk). ``format`` constrains the output unless the model is
    thinking: the runner's grammar cannot leave the thinking block free, so it is not applied.
    """
    started = time.perf_counter() if started is None else started
    if not req.model:
        raise InvalidRequestError("model is required")
    json_schema = sem.json_schema_for(req.format)
    model = await sem.lookup_model(state, req.model)
    has_images = any(m.images for m in req.messages if m.images is not msgspec.UNSET)
    think = sem.check_common(
        model,
        requested=req.model,
        think=req.think,
        top_logprobs=req.top_logprobs,
        images=has_images,
        tools=bool(req.tools),
    )
    prep = pipeline.prepare(state.settings, model, req.options, req.keep_alive)
    if not req.messages:
        reason = await pipeline.load_or_unload(state.runners, prep)
        yield _chunk(
            req.model, Message(role="assistant", content=""), done=True, done_reason=reason
        )
        return
    messages = _messages(req)
    decoded = [
        await sem.read_images(m.get("images") or (), f"messages[{i}].images")
        for i, m in enumerate(messages)
    ]
    text = await _render(state, model, messages, req.tools, think)
    kept = messages
    if req.truncate:
        text, kept = await _fit_history(state, prep, messages, text, req.tools, think)
    survived = {id(m) for m in kept}  # the images of kept messages, numbered as rendered
    images = sem.image_payload(
        data
        for m, of_message in zip(messages, decoded, strict=True)
        if id(m) in survived
        for data in of_message
    )
    if req.debug_render_only:
        info = reply.debug_info(text, images)
        yield _chunk(req.model, Message(role="", content=""), done=False, debug_info=info)
        return
    parser = sem.output_parser(model, text, think=think, tools=req.tools)
    build = pipeline.generate_message(
        prep,
        text,
        images=images,
        add_bos=sem.add_bos_for(model, text),
        logprobs=req.top_logprobs if req.logprobs else -1,
        shift=req.shift,
        truncate=req.truncate,
        json_schema="" if parser.thinking is not None else json_schema,
    )
    top = req.top_logprobs if req.logprobs else None
    async for item in pipeline.generation(
        state.runners, prep, build, parser, kind="chat", top_logprobs=top, started=started
    ):
        if isinstance(item, pipeline.Finished):
            if on_end is not None:
                on_end(item)
            final = _chunk(
                req.model,
                Message(role="assistant", content=""),
                done=True,
                done_reason=item.done_reason,
                **item.metrics,
            )
            if item.logprobs:
                final.logprobs = item.logprobs
            yield final
            return
        got = item.parsed
        msg = Message(role="assistant", content=got.content)
        if got.thinking:
            msg.thinking = got.thinking
        if got.tool_calls:
            msg.tool_calls = got.tool_calls
        chunk = _chunk(req.model, msg, done=False)
        if req.logprobs:
            chunk.logprobs = item.logprobs
        yield chunk


def _chunk(model: str, message: Message, *, done: bool, **fields: Any) -> ChatChunk:
    return ChatChunk(
        model=model, created_at=reply.created_at(), message=message, done=done, **fields
    )


def merge_chat(chunks: list[ChatChunk]) -> ChatChunk:
    """The non-streamed form: content and thinking concatenated into the final chunk, tool
    calls collected, logprobs joined."""
    final = chunks[-1]
    final.message.content = "".join(c.message.content for c in chunks)
    thinking = "".join(t for c in chunks if isinstance(t := c.message.thinking, str))
    if thinking:
        final.message.thinking = thinking
    calls = reply.joined(c.message.tool_calls for c in chunks)
    probs = reply.joined(c.logprobs for c in chunks)
    if calls:
        final.message.tool_calls = calls
    if probs:
        final.logprobs = probs
    return final


async def chat(request: Request) -> Response:
    started = time.perf_counter()
    req = await body.decode_body(request, ChatRequest)
    chunks = chat_chunks(request.app.state, req, started=started)
    if req.stream and not req.debug_render_only:  # the rendered prompt is one JSON object
        first, rest = await prime(ndjson_lines(chunks))
        return NDJSONResponse(first, rest)
    collected = [c async for c in chunks]
    return reply.json_response(merge_chat(collected))


routes = [Route("/api/chat", chat, methods=["POST"])]
