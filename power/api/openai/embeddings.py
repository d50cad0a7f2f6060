"""POST /v1/embeddings on top of the native ``embed_core``."""

from __future__ import annotations

import base64
import struct
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api import response as reply
from power.api import semantics as sem
from power.api import tokens
from power.api.embed import check_input_count, embed_core
from power.api.openai.sse import (
    ParamError,
    decode,
    keep_alive,
    openai_errors,
)
from power.errors import InvalidRequestError

__all__ = ["routes"]


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    input: Any = None
    encoding_format: str = "float"
    dimensions: int | None = None
    user: str | None = None
    keep_alive: Any = None
    options: dict[str, Any] | None = None
    truncate: bool = True


async def _embed_inputs(request: Request, req: EmbeddingRequest) -> list[str]:
    value = req.input
    try:
        check_input_count(value)
    except InvalidRequestError as exc:
        raise ParamError(str(exc), param="input") from exc
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(type(v) is int for v in value):
            value = [value]
        if all(isinstance(v, list) and all(type(t) is int for t in v) for v in value):
            model = await sem.lookup_model(request.app.state, req.model)
            return [await tokens.detokenize(request.app.state, model, v) for v in value]
    raise ParamError(
        "input must be a string, an array of strings, or token ids (an array of integers, or "
        "an array of such arrays)",
        param="input",
    )


def _encode(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


@openai_errors
async def embeddings(request: Request) -> Response:
    req = await decode(request, EmbeddingRequest)
    if not req.model:
        raise ParamError("model is required", param="model")
    if req.encoding_format not in ("float", "base64"):
        raise ParamError(
            f"Invalid value for 'encoding_format' = {req.encoding_format}. "
            "Supported values: ['float', 'base64'].",
            param="encoding_format",
        )
    if req.dimensions is not None and req.dimensions <= 0:
        raise ParamError("dimensions must be a positive integer", param="dimensions")
    inputs = await _embed_inputs(request, req)
    result = await embed_core(
        request.app.state, req.model, inputs, truncate=req.truncate, dimensions=req.dimensions,
        keep_alive=keep_alive(request, req.keep_alive), options=req.options,
    )  # fmt: skip
    data = [
        {"object": "embedding", "embedding": _encode(list(v), req.encoding_format), "index": i}
        for i, v in enumerate(result.vectors)
    ]
    used = int(result.prompt_tokens)
    return reply.json_response({
        "object": "list", "data": data, "model": req.model,
        "usage": {"prompt_tokens": used, "total_tokens": used},
    })  # fmt: skip


routes = [
    Route("/v1/embeddings", embeddings, methods=["POST"]),
]
