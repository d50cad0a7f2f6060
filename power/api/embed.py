"""POST /api/embed (batch, L2-normalised) and the legacy POST /api/embeddings.

``embed_core`` is the shared engine room, also called by OpenAI's ``/v1/embeddings``. A model
with the ``embedding`` capability gets an embedding runner; any other model embeds on the same
runner that serves its chat, so alternating chat and embed requests never reload it.

What one request may cost the gateway is bounded by the numbers it answers with: inputs times
the vector's width (after ``dimensions``), ``MAX_EMBED_FLOATS`` at most, checked against the
model's ``embedding_length`` before anything runs and again as vectors arrive. They are kept as
float32 blocks as they come, never as Python floats (100,000 vectors of 576 took the gateway
from 161 MB to 2.9 GB as lists), and a large answer is encoded a block at a time on a worker
thread while it is sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from power import observe
from power.api import body, pipeline
from power.api import response as reply
from power.api import semantics as sem
from power.api.schemas import EmbeddingsRequest, EmbedRequest, EmbedResponse
from power.errors import InvalidRequestError, ModelNotFoundError, PowerError
from power.supervisor.service import RequestTiming, Runners, RunnerStats
from proto import Done, Embed, Embeddings

if TYPE_CHECKING:
    from power.store.model import LocalModel

__all__ = [
    "MAX_EMBED_FLOATS",
    "MAX_INPUTS",
    "EmbedResult",
    "Vectors",
    "check_input_count",
    "embed_core",
    "routes",
    "spliced_json",
]

# Inputs one embedding request may hold (a RAG ingestion sends a few thousand at a time); 20
# million one-letter ones took the gateway 3.6 GiB and minutes before this limit.
MAX_INPUTS = 100_000
# Numbers one embedding request may answer with (256 MiB as float32, several times that as
# JSON): 100,000 inputs of a 384-wide model, 87,000 of a 768-wide one, 16,384 of a 4096-wide one
MAX_EMBED_FLOATS = 1 << 26
# Numbers up to which an answer is encoded in one piece, with a Content-Length (about 1.3 MB)
_STREAM_FLOATS = 1 << 16

Vector = np.ndarray[Any, np.dtype[np.float32]]


def check_input_count(value: object) -> None:
    """InvalidRequestError when ``value`` is a list of more than ``MAX_INPUTS`` inputs."""
    if isinstance(value, list) and len(value) > MAX_INPUTS:
        raise InvalidRequestError(f"input holds more than {MAX_INPUTS} items")


@dataclass(slots=True)
class Vectors:
    """Embeddings in input order: float32 blocks of rows, as the runner's frames brought them."""

    blocks: list[Vector] = field(default_factory=list)
    rows: int = 0
    floats: int = 0

    def add(self, block: Vector) -> None:
        self.blocks.append(block)
        self.rows += block.shape[0]
        self.floats += block.size

    def __len__(self) -> int:
        return self.rows

    def first(self) -> Vector | None:
        return self.blocks[0][0] if self.blocks else None


@dataclass(frozen=True, slots=True)
class EmbedResult:
    vectors: Vectors
    prompt_tokens: int
    model: LocalModel
    load_s: float
    total_s: float


def _too_many(numbers: int, inputs: int, width: int) -> InvalidRequestError:
    fit = max(1, MAX_EMBED_FLOATS // max(1, width))
    return InvalidRequestError(
        f"the embeddings of {inputs} inputs would be {numbers:,} numbers ({width} each), over the"
        f" limit of {MAX_EMBED_FLOATS:,} numbers for one request: send at most {fit} inputs of"
        " this model at a time, or ask for fewer dimensions"
    )


def _block(msg: Embeddings, dimensions: int | None, normalize: bool) -> Vector:
    """One frame's vectors as float32 rows: cut to ``dimensions`` and normalised as asked."""
    try:
        rows = np.asarray(msg.vectors, dtype=np.float64)
    except ValueError as exc:
        raise PowerError("the runner returned embeddings of unequal lengths") from exc
    if rows.ndim != 2:
        raise PowerError("the runner returned embeddings of unequal lengths")
    if not np.isfinite(rows).all():
        raise InvalidRequestError("embedding contains NaN or Inf values")
    if dimensions is not None and 0 < dimensions < rows.shape[1]:
        rows = rows[:, :dimensions]
    if normalize:
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        rows = rows / np.where(norms > 0, norms, 1.0)
    return rows.astype(np.float32)


async def embed_core(
    state: State,
    model_name: str,
    inputs: list[str],
    *,
    tokens: Sequence[Sequence[int]] = (),
    truncate: bool = True,
    dimensions: int | None = None,
    keep_alive: object = None,
    options: dict[str, Any] | None = None,
    normalize: bool = True,
) -> EmbedResult:
    """Embed ``inputs`` (in order) with ``model_name``, or the token ids ``tokens`` as they
    are when given (``inputs`` is then ignored); no inputs just loads the model.

    With ``normalize`` every vector has unit L2 norm; ``0 < dimensions < len(vector)`` cuts
    it first (and re-normalises, when normalising). Raises before anything is computed for a
    missing model, a token id outside its vocabulary or too large an answer
    (``MAX_EMBED_FLOATS``), and InvalidRequestError for an over-long input with ``truncate``
    off.
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
    count = len(tokens) if tokens else len(inputs)
    if not count:
        load_started = time.perf_counter()
        await runners.load(model, prep.options.load, prep.keep_alive_s)
        load_s = time.perf_counter() - load_started
        return EmbedResult(Vectors(), 0, model, load_s, time.perf_counter() - started)
    width = model.gguf.embedding_length or 0
    if dimensions is not None and 0 < dimensions < width:
        width = dimensions
    if count * width > MAX_EMBED_FLOATS:
        raise _too_many(count * width, count, width)
    if tokens:
        _check_ids(model, tokens, await runners.load(model, prep.options.load, prep.keep_alive_s))
    timing = RequestTiming()
    texts = () if tokens else tuple(inputs)
    ids = tuple(tuple(t) for t in tokens)
    vectors = Vectors()
    used = 0
    events = runners.request(
        model,
        prep.options.load,
        prep.keep_alive_s,
        lambda i: Embed(
            id=i,
            inputs=texts,
            truncate=truncate,
            normalize=normalize,
            n_ctx=prep.options.load.n_ctx,  # its own, also when a larger runner serves it
            tokens=ids,
        ),
        timing=timing,
    )
    info = observe.current()
    try:
        async for batch in events:
            for msg in batch:
                if isinstance(msg, Embeddings):
                    if msg.vectors:
                        vectors.add(_block(msg, dimensions, normalize))
                        if vectors.floats > MAX_EMBED_FLOATS:
                            width = vectors.floats // vectors.rows
                            raise _too_many(count * width, count, width)
                    used += msg.prompt_tokens
                elif isinstance(msg, Done) and not used:
                    used = msg.stats.prompt_tokens
    except BaseException as exc:
        if info is not None:
            info.error = str(exc) or type(exc).__name__
        raise
    finally:
        await events.aclose()  # type: ignore[attr-defined]  # (one given up is cancelled now)
        if info is not None:
            info.kind, info.model, info.load_s = "embed", model.name, timing.load_s
            info.prompt_tokens = used
    if len(vectors) != count:
        raise PowerError(f"the runner returned {len(vectors)} embeddings for {count} inputs")
    return EmbedResult(vectors, used, model, timing.load_s, time.perf_counter() - started)


def _check_ids(model: LocalModel, tokens: Sequence[Sequence[int]], stats: RunnerStats) -> None:
    """A 400 for the first id outside ``model``'s vocabulary (llama.cpp aborts on it)."""
    n_vocab = stats.n_vocab
    if not n_vocab:
        return
    for ids in tokens:
        bad = next((t for t in ids if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise InvalidRequestError(
                f"token id {bad} is out of range: {model.name} has {n_vocab} tokens"
            )


def spliced_json(
    obj: object, key: str, items: Iterator[bytes], numbers: int, status: int = 200
) -> Response:
    """``obj`` as JSON, its empty list under ``key`` filled with ``items`` (each the JSON of
    one or more of its elements, comma-separated). An answer of more than ``_STREAM_FLOATS``
    ``numbers`` is encoded piece by piece on a worker thread while it is sent, so it is never
    whole in memory and never holds up the event loop."""
    whole = msgspec.json.encode(obj)
    marker = b'"' + key.encode() + b'":['  # (a quote inside a string is escaped: not there)
    cut = whole.index(marker) + len(marker)
    head, tail = whole[:cut], whole[cut:]

    def pieces() -> Iterator[bytes]:
        yield head
        for n, item in enumerate(items):
            yield b"," + item if n else item
        yield tail

    media = "application/json; charset=utf-8"
    if numbers <= _STREAM_FLOATS:
        return Response(b"".join(pieces()), status_code=status, media_type=media)
    return StreamingResponse(pieces(), status_code=status, media_type=media)  # (on a thread)


def _rows_json(vectors: Vectors) -> Iterator[bytes]:
    for block in vectors.blocks:
        yield msgspec.json.encode(block.tolist())[1:-1]


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
    out = EmbedResponse(model=req.model, embeddings=[])
    if inputs:
        out.total_duration = int(result.total_s * 1e9)
        if result.load_s:
            out.load_duration = int(result.load_s * 1e9)
        if result.prompt_tokens:
            out.prompt_eval_count = result.prompt_tokens
    vectors = result.vectors
    return spliced_json(out, "embeddings", _rows_json(vectors), vectors.floats)


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
    first = result.vectors.first()
    return reply.json_response({"embedding": [] if first is None else first.tolist()})


routes = [
    Route("/api/embed", embed, methods=["POST"]),
    Route("/api/embeddings", embeddings, methods=["POST"]),
]
