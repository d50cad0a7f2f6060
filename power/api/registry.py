"""``POST /api/pull`` and ``POST /api/push``: Ollama's NDJSON progress, or one final object.

The :class:`RegistryService` (transfers shared between requests) is made on first use and kept
on ``app.state.registry``; a test may put its own there first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api.body import decode_body
from power.api.response import json_response
from power.api.streaming import NDJSONResponse, prime
from power.errors import InvalidRequestError
from power.registry import RegistryService, is_url, pull, push
from power.store.names import ModelName

__all__ = ["routes"]

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


class _TransferRequest(msgspec.Struct):
    model: str = ""
    name: str = ""
    insecure: bool = False
    stream: bool | None = None
    username: str = ""  # accepted and ignored, as Ollama does
    password: str = ""


def service(request: Request) -> RegistryService:
    state = request.app.state
    svc: RegistryService | None = getattr(state, "registry", None)
    if svc is None:
        svc = RegistryService(
            state.store, home=Path(state.settings.home).expanduser(), env=dict(os.environ)
        )
        state.registry = svc
    return svc


async def _request(request: Request) -> _TransferRequest:
    req = await decode_body(request, _TransferRequest)
    req.model = req.model or req.name
    if not req.model:
        raise InvalidRequestError("model is required")
    if not is_url(req.model) and not ModelName.parse(req.model).is_valid():
        raise InvalidRequestError("invalid model name")
    return req


async def _lines(progress: AsyncGenerator[dict[str, Any], None]) -> AsyncIterator[bytes]:
    try:
        async for p in progress:
            yield _encoder.encode(p) + b"\n"
    finally:
        await progress.aclose()


async def _respond(
    req: _TransferRequest, progress: AsyncGenerator[dict[str, Any], None]
) -> Response:
    if req.stream is False:
        try:
            async for _ in progress:
                pass
        finally:
            await progress.aclose()
        return json_response({"status": "success"})
    first, rest = await prime(_lines(progress))
    return NDJSONResponse(first, rest)


async def pull_model(request: Request) -> Response:
    req = await _request(request)
    return await _respond(req, pull(service(request), req.model, insecure=req.insecure))


async def push_model(request: Request) -> Response:
    req = await _request(request)
    return await _respond(req, push(service(request), req.model, insecure=req.insecure))


routes: list[Route] = [
    Route("/api/pull", pull_model, methods=["POST"]),
    Route("/api/push", push_model, methods=["POST"]),
]
