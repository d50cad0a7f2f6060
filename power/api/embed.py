"""POST /api/embed (batch, L2-normalised) and the legacy POST /api/embeddings.

``embed_core`` is the shared engine room, also called by OpenAI's ``/v1/embeddings``. A model
with the ``embedding`` capability gets an embedding runner; any other model embeds on the same
runner that serves its chat, so alternating chat and embed requests never reload it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power import observe
from power.api import body, pipeline
from power.api import response as reply
from power.api import semantics as sem
from power.api.schemas import EmbeddingsRequest, EmbedRequest, EmbedResponse
from power.errors import InvalidRequestError, ModelNotFoundError, PowerError
from power.supervisor.service import RequestTiming, Runners
from proto import Done, Embed, Embeddings

if TYPE_CHECKING:
    from power.store.model import LocalModel

__all__ = ["MAX_INPUTS", "EmbedResult", "check_input_count", "embed_core", "routes"]

# Inputs one embedding request may hold (a RAG ingestion sends a few thousand at a time); 20
# million one-letter ones took the gateway 3.6 GiB and minutes before this limit.
MAX_INPUTS = 100_000


def check_input_count(value: object) -> None:
    """InvalidRequestError when ``value`` is a list of more than ``MAX_INPUTS`` inputs."""
    if isinstance(value, list) and len(value) > MAX_INPUTS:
        raise InvalidRequestError(f"input holds more than {MAX_INPUTS} items")


@dataclass(frozen=True, slots=True)
class EmbedResult:
    vectors: list[list[float]]
    prompt_tokens: int
    model: LocalModel
    load_s: float
    total_s: float


def normalized(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(math.fsum(v * v for v in vector))
    return [v / norm for v in vector] if norm > 0 else list(vector)


async def embed_core(
    state: State,
    model_name: str,
    inputs: list[str],
    *,
    truncate: bool = True,
    dimensions: int | None = None,
    keep_alive: object = None,
    options: dict[str, Any] | None = None,
    normalize: bool = True,
) -> EmbedResult:
    """Embed ``inputs`` (in order) with ``model_name``; no inputs just loads the model.

    With ``normalize`` every vector has unit L2 norm; ``0 < dimensions < len(vector)`` cuts
    it first (and re-normalises, when normalising). Raises before anything is computed for a
    missing model, and InvalidRequestError for an over-long input with ``truncate`` off.
    """
    started = time.perf_counter()
    if not model_name:
        raise ModelNotFoundError('model "" not found, try pulling it first')
    try:
        model = await sem.lookup_model(state, model_name)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(
            f'model "{model_name}" not found, try pulling it first', model=model_name
        ) from exc
    prep = pipeline.prepare(
        state.settings, model, options, keep_alive, embedding="embedding" in model.capabilities
    )
    runners: Runners = state.runners
    if not inputs:
        load_started = time.perf_counter()
        await runners.load(model, prep.options.load, prep.keep_alive_s)
        load_s = time.perf_counter() - load_started
        return EmbedResult([], 0, model, load_s, time.perf_counter() - started)
    timing = RequestTiming()
    request = tuple(inputs)
    vectors: list[list[float]] = []
    tokens = 0
    events = runners.request(
        model,
        prep.options.load,
        prep.keep_alive_s,
        lambda i: Embed(
            id=i,
            inputs=request,
            truncate=truncate,
            normalize=normalize,
            n_ctx=prep.options.load.n_ctx,  # its own, also when a larger runner serves it
        ),
        timing=timing,
    )
    info = observe.current()
    try:
        async for batch in events:
            for msg in batch:
                if isinstance(msg, Embeddings):
                    vectors.extend(list(v) for v in msg.vectors)
                    tokens += msg.prompt_tokens
                elif isinstance(msg, Done) and not tokens:
                    tokens = msg.stats.prompt_tokens
    except BaseException as exc:
        if info is not None:
            info.error = str(exc) or type(exc).__name__
        raise
    finally:
        if info is not None:
            info.kind, info.model, info.load_s = "embed", model.name, timing.load_s
            info.prompt_tokens = tokens
    if len(vectors) != len(inputs):
        raise PowerError(f"the runner returned {len(vectors)} embeddings for {len(inputs)} inputs")
    if not all(math.isfinite(v) for vec in vectors for v in vec):
        raise InvalidRequestError("embedding contains NaN or Inf values")
    if dimensions is not None and dimensions > 0:
        vectors = [vec[:dimensions] for vec in vectors]
    if normalize:
        vectors = [normalized(vec) for vec in vectors]
    return EmbedResult(vectors, tokens, model, timing.load_s, time.perf_counter() - started)


def _inputs(value: object) -> list[str]:
    check_input_count(value)
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidRequestError("invalid input type")


async def embed(request: Request) -> Response:
    req = await body.decode_body(request, EmbedRequest)
    inputs = _inputs(req.input)
    result = await embed_core(
        request.app.state,
        req.model,
        inputs,
        truncate=req.truncate,
        dimensions=req.dimensions,
        keep_alive=req.keep_alive,
        options=req.options,
    )
    out = EmbedResponse(model=req.model, embeddings=result.vectors)
    if inputs:
        out.total_duration = int(result.total_s * 1e9)
        if result.load_s:
            out.load_duration = int(result.load_s * 1e9)
        if result.prompt_tokens:
            out.prompt_eval_count = result.prompt_tokens
    return reply.json_response(out)


async def embeddings(request: Request) -> Response:
    """The legacy form: one prompt, one vector as the model computes it (not normalised)."""
    req = await body.decode_body(request, EmbeddingsRequest)
    inputs = [req.prompt] if req.prompt else []
    result = await embed_core(
        request.app.state,
        req.model,
        inputs,
        keep_alive=req.keep_alive,
        options=req.options,
        normalize=False,
    )
    return reply.json_response({"embedding": result.vectors[0] if result.vectors else []})


routes = [
    Route("/api/embed", embed, methods=["POST"]),
    Route("/api/embeddings", embeddings, methods=["POST"]),
]
