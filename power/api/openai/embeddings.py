"""POST /v1/embeddings on top of the native ``embed_core``.

Token-id inputs are embedded as the ids they are (a round trip through text lost special
tokens: ``[1, 4093]`` was embedded as just "user", and ids of special tokens only as nothing).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api.embed import Vectors, check_input_count, embed_core, spliced_json
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


def _embed_inputs(req: EmbeddingRequest) -> list[str] | list[list[int]]:
    """The texts of ``req``, or its arrays of token ids."""
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
            if not all(value):
                raise ParamError("an array of token ids is empty: nothing to embed", param="input")
            return list(value)
    raise ParamError(
        "input must be a string, an array of strings, or token ids (an array of integers, or "
        "an array of such arrays)",
        param="input",
    )


def _items(vectors: Vectors, fmt: str) -> Iterator[bytes]:
    index = 0
    for block in vectors.blocks:
        data: list[dict[str, Any]] = []
        for row in block:
            embedding: list[float] | str = (
                row.tolist()
                if fmt == "float"
                else base64.b64encode(row.astype("<f4").tobytes()).decode()
            )
            data.append({"object": "embedding", "embedding": embedding, "index": index})
            index += 1
        yield msgspec.json.encode(data)[1:-1]


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
    inputs = _embed_inputs(req)
    texts = [v for v in inputs if isinstance(v, str)]
    ids = [v for v in inputs if isinstance(v, list)]
    result = await embed_core(
        request.app.state, req.model, texts, tokens=ids, truncate=req.truncate,
        dimensions=req.dimensions, keep_alive=keep_alive(request, req.keep_alive),
        options=req.options,
    )  # fmt: skip
    used = int(result.prompt_tokens)
    out = {
        "object": "list", "data": [], "model": req.model,
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }  # fmt: skip
    vectors = result.vectors
    numbers = vectors.floats if req.encoding_format == "float" else vectors.floats // 4
    return spliced_json(out, "data", _items(vectors, req.encoding_format), numbers)


routes = [
    Route("/v1/embeddings", embeddings, methods=["POST"]),
]
