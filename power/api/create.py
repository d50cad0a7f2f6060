"""``POST /api/create``: a model from a base, uploaded files and modifiers; a missing base is
pulled first.

The request (structured, or an old-style ``modelfile`` whose ``FROM`` fills ``from``) is checked
before the response starts, so a bad request is a real 400. When ``from`` names a model that is
not in the store, it is pulled as ``/api/pull`` would, and the pull's progress lines (its own
``success`` included) come first in the same NDJSON stream, then the create's (Ollama's
``parseFromModel``). Like Ollama, that pull never forces plain http: a create request has no
``insecure``. ``stream: false`` answers one ``{"status":"success"}``, or the error with its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api.body import json_object
from power.api.registry import service
from power.api.response import json_response
from power.api.streaming import NDJSONResponse
from power.create.build import base_to_pull, create_model
from power.create.request import prepare
from power.errors import PowerError
from power.registry import RegistryService, pull
from power.registry.through import deferred, local_only

__all__ = ["routes"]

log = logging.getLogger(__name__)

Progress = dict[str, Any]

_encoder = msgspec.json.Encoder()


async def _steps(
    svc: RegistryService | None, base: str | None, it: Iterator[Progress]
) -> AsyncGenerator[Progress, None]:
    """The pull's progress (when there is a base to pull), then the create's."""
    try:
        if svc is not None and base is not None:
            async with contextlib.aclosing(pull(svc, base, insecure=False)) as pulling:
                async for p in pulling:
                    yield p
        while (step := await asyncio.to_thread(local_only, next, it, None)) is not None:
            yield step
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            with contextlib.suppress(ValueError):  # still running in a worker thread
                close()


async def _lines(steps: AsyncGenerator[Progress, None]) -> AsyncIterator[bytes]:
    """One JSON line per step; an error ends the stream as an in-band ``{"error": …}`` line."""
    try:
        async for step in steps:
            yield _encoder.encode(step) + b"\n"
    except PowerError as exc:
        yield _encoder.encode({"error": str(exc)}) + b"\n"
    except Exception as exc:
        log.exception("create failed after the stream started")
        yield _encoder.encode({"error": str(exc) or type(exc).__name__}) + b"\n"
    finally:
        await steps.aclose()


async def create(request: Request) -> Response:
    store = request.app.state.store
    raw = await json_object(request)
    name = str(raw.get("model") or raw.get("name") or "")
    req = await asyncio.to_thread(prepare, raw)  # (its Modelfile parsed once: it may be large)
    # in a fleet, a `from` the store lacks is pulled through here, awaited on the loop; the
    # create itself then reads only what the store has (its base is there, or pulled first)
    base = await deferred(base_to_pull, store, req)
    pull_base = base is not None
    it = await asyncio.to_thread(local_only, create_model, store, name, req, pull_base=pull_base)
    if base is not None:
        log.info("create %s: pulling its base %s first", name, base)
    steps = _steps(service(request) if base is not None else None, base, it)
    if raw.get("stream") is False:
        async with contextlib.aclosing(steps):
            async for _ in steps:
                pass
        return json_response({"status": "success"})
    first = await anext(steps, None)  # errors so far become real statuses
    if first is None:
        return json_response({"status": "success"})
    return NDJSONResponse(_encoder.encode(first) + b"\n", _lines(steps))


routes: list[Route] = [Route("/api/create", create, methods=["POST"])]
