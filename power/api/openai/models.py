"""GET /v1/models and /v1/models/{model}: the local models, in OpenAI's shape."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api import response as reply
from power.api import semantics as sem
from power.api.openai.sse import (
    openai_errors,
)
from power.store.names import ModelName

__all__ = ["routes"]


def _model_object(name: str, created: float) -> dict[str, Any]:
    owner = ModelName.parse(name).namespace or "library"
    return {"id": name, "object": "model", "created": int(created), "owned_by": owner}


@openai_errors
async def list_models(request: Request) -> Response:
    entries = await asyncio.to_thread(request.app.state.store.list)
    data = [_model_object(e.name, e.modified_at) for e in entries]
    return reply.json_response({"object": "list", "data": data})


@openai_errors
async def retrieve_model(request: Request) -> Response:
    name = request.path_params["model"]
    model = await sem.lookup_model(request.app.state, name)
    return reply.json_response(_model_object(name, model.modified_at))


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
]
