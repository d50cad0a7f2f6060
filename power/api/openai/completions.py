"""POST /v1/completions (legacy completions) on top of the native ``generate_chunks``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api import response as reply
from power.api import semantics as sem
from power.api import tokens
from power.api.generate import generate_chunks
from power.api.openai.chat import FINGERPRINT, usage_of
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
from power.api.schemas import GenerateChunk, GenerateRequest, Logprob
from power.api.streaming import StreamResponse, prime

__all__ = ["routes"]


class CompletionRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    prompt: Any = None
    suffix: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: Any = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    logprobs: int | None = None
    echo: bool = False
    n: int | None = None
    best_of: int | None = None
    keep_alive: Any = None
    options: dict[str, Any] | None = None


async def _prompt_text(request: Request, req: CompletionRequest) -> str:
    """A string, one string in an array, or token ids (turned back into text by the model)."""
    value = req.prompt
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str | list):
        value = value[0]
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(type(t) is int for t in value):
        model = await sem.lookup_model(request.app.state, req.model)
        return await tokens.detokenize(request.app.state, model, value)
    raise ParamError(
        "prompt must be a string or one array of token ids (several prompts are not supported)",
        param="prompt",
    )


def _logprobs(entries: list[Logprob], offset: int) -> dict[str, Any]:
    offsets, pos = [], offset
    for e in entries:
        offsets.append(pos)
        pos += len(e.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [
            {t.token: t.logprob for t in (e.top_logprobs or [])}  # type: ignore[union-attr]
            for e in entries
        ],
        "text_offset": offsets,
    }


def _reason(final: GenerateChunk | None) -> str:
    return "length" if final is not None and final.done_reason == "length" else "stop"


async def _events(
    chunks: AsyncIterator[GenerateChunk], model: str, echo: str, include_usage: bool
) -> AsyncIterator[bytes]:
    head = {"id": new_id("cmpl-"), "object": "text_completion", "created": int(time.time()),
            "model": model, "system_fingerprint": FINGERPRINT}  # fmt: skip
    final = None
    offset = len(echo)
    try:
        async for chunk in chunks:
            lp = None
            if chunk.logprobs:
                lp = _logprobs(chunk.logprobs, offset)  # type: ignore[arg-type]
            offset += len(chunk.response)
            text, echo = echo + chunk.response, ""
            if text or lp:
                choice = {"text": text, "index": 0, "logprobs": lp, "finish_reason": None}
                yield sse({**head, "choices": [choice]})
            if chunk.done:
                final = chunk
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    choice = {"text": "", "index": 0, "logprobs": None, "finish_reason": _reason(final)}
    yield sse({**head, "choices": [choice]})
    if include_usage:
        yield sse({**head, "choices": [], "usage": usage_of(final)})


@openai_errors
async def completions(request: Request) -> Response:
    started = time.perf_counter()
    req = await decode(request, CompletionRequest)
    if not req.model:
        raise ParamError("model is required", param="model")
    if req.n not in (None, 1) or req.best_of not in (None, 1):
        raise ParamError("n and best_of > 1 are not supported", param="n")
    if req.logprobs is not None and not 0 <= req.logprobs <= 20:
        raise ParamError("logprobs must be between 0 and 20", param="logprobs")
    prompt = await _prompt_text(request, req)
    opts = sampling_options(
        req.options, temperature=req.temperature, top_p=req.top_p, max_tokens=req.max_tokens,
        seed=req.seed, stop=stop_list(req.stop), frequency_penalty=req.frequency_penalty,
        presence_penalty=req.presence_penalty,
    )  # fmt: skip
    native = GenerateRequest(
        model=req.model, prompt=prompt, suffix=req.suffix or "", stream=req.stream,
        keep_alive=keep_alive(request, req.keep_alive), options=opts,
        logprobs=req.logprobs is not None, top_logprobs=req.logprobs or 0,
    )  # fmt: skip
    chunks = generate_chunks(request.app.state, native, started=started)
    echo = prompt if req.echo else ""
    if req.stream:
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        first, rest = await prime(_events(chunks, req.model, echo, include_usage))
        return StreamResponse(
            first, rest, media_type="text/event-stream", error_line=sse_error, trailer=DONE
        )
    parts = [c async for c in chunks]
    final = parts[-1] if parts else None
    probs = [lp for c in parts if c.logprobs for lp in c.logprobs]  # type: ignore[union-attr]
    choice = {"text": echo + "".join(c.response for c in parts), "index": 0,
              "logprobs": _logprobs(probs, len(echo)) if req.logprobs is not None else None,
              "finish_reason": _reason(final)}  # fmt: skip
    return reply.json_response({
        "id": new_id("cmpl-"), "object": "text_completion", "created": int(time.time()),
        "model": req.model, "system_fingerprint": FINGERPRINT, "choices": [choice],
        "usage": usage_of(final),
    })  # fmt: skip


routes = [
    Route("/v1/completions", completions, methods=["POST"]),
]
