"""``create_app``: the Starlette application, its routes, error mapping and middleware."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from power.api import blobs, chat, create, generate, models, ps
from power.api import embed as embed_api
from power.api import registry as registry_api
from power.api import usage as usage_api
from power.api.anthropic import messages as anthropic_messages
from power.api.anthropic.convert import anthropic_error_body
from power.api.auth import AuthMiddleware
from power.api.body import BodyLimitMiddleware
from power.api.disconnect import CancelOnDisconnect
from power.api.guard import GuardMiddleware
from power.api.openai import chat as openai_chat
from power.api.openai import completions as openai_completions
from power.api.openai import embeddings as openai_embeddings
from power.api.openai import models as openai_models
from power.api.openai import responses as openai_responses
from power.api.openai.sse import openai_error_body
from power.errors import PowerError, reported
from power.location import is_loopback
from power.logging import AccessLog
from power.metrics import Metrics, metrics_endpoint
from power.observe import ObserveMiddleware, Observer
from power.settings import allowed_origins, parse_api_keys
from power.template import TemplateSandbox

if TYPE_CHECKING:
    from power.settings import Settings
    from power.store import ModelStore
    from power.supervisor.service import Runners
    from power.usage import UsageRecorder

__all__ = ["create_app"]


async def _error(request: Request, exc: Exception) -> Response:
    err = reported(exc, method=request.method, path=request.url.path)
    return JSONResponse({"error": str(err)}, status_code=err.status, headers=err.headers)


async def _routing_error(request: Request, exc: Exception) -> Response:
    """No route, or not this method: Starlette's plain text under ``/api`` (Ollama answers
    plain text too), the OpenAI or Anthropic error JSON under ``/v1``, which their SDKs read."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if not path.startswith("/v1/"):
        return PlainTextResponse(str(exc.detail), status_code=exc.status_code, headers=exc.headers)
    err = PowerError(str(exc.detail))
    err.status = exc.status_code
    shape = anthropic_error_body if path.startswith("/v1/messages") else openai_error_body
    return JSONResponse(shape(err), status_code=exc.status_code, headers=exc.headers)


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    renderer: TemplateSandbox = app.state.renderer
    await asyncio.to_thread(renderer.warm)
    try:
        yield
    finally:
        await asyncio.to_thread(renderer.close)
        registry = getattr(app.state, "registry", None)
        if registry is not None:
            await registry.aclose()  # pulled blobs reach the disk before the server exits


def route_map(routes: Sequence[BaseRoute]) -> Callable[[Scope], str]:
    """The route template (``/api/blobs/{digest}``) a request belongs to, "" when none matches.

    The endpoint Starlette's router put on the scope says it at once; a request answered before
    routing (a 401, a 403 from the Host guard) is matched against the routes here."""
    paths = {getattr(r, "endpoint", None): getattr(r, "path", "") for r in routes}

    def route_of(scope: Scope) -> str:
        endpoint = scope.get("endpoint")
        if endpoint is not None:
            return paths.get(endpoint, "")
        for route in routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return getattr(route, "path", "")
        return ""

    return route_of


def create_app(
    settings: Settings,
    runners: Runners,
    store: ModelStore,
    *,
    metrics: Metrics | None = None,
    observers: Sequence[Observer] = (),
    usage: UsageRecorder | None = None,
) -> Starlette:
    """The app over ``runners`` and ``store``. Every finished request goes to the access log,
    ``metrics`` (made here when not given: the daemon passes the one the supervisor reports
    to), ``usage`` (which records inference requests and answers ``/v1/usage``; without it
    that endpoint says usage is not recorded) and ``observers``. Chat templates render in
    ``app.state.renderer``, whose worker processes the app's lifespan starts and stops."""
    metrics = metrics or Metrics(settings)
    if usage is not None:
        observers = [usage, *observers]
    routes = [
        *ps.routes,
        *generate.routes,
        *chat.routes,
        *embed_api.routes,
        *models.routes,
        *blobs.routes,
        *create.routes,
        *registry_api.routes,
        *openai_chat.routes,
        *openai_completions.routes,
        *openai_models.routes,
        *openai_embeddings.routes,
        *openai_responses.routes,
        *anthropic_messages.routes,
        *usage_api.routes,
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={PowerError: _error, HTTPException: _routing_error, Exception: _error},
        lifespan=_lifespan,
        middleware=[
            Middleware(
                ObserveMiddleware,
                observers=[AccessLog(), metrics, *observers],
                route_of=route_map(routes),
            ),
            Middleware(
                GuardMiddleware,
                origins=allowed_origins(settings),
                check_host=is_loopback(settings.host),
            ),
            Middleware(
                BodyLimitMiddleware,
                max_bytes=settings.max_body_size,
                idle_s=settings.body_timeout_s,
            ),
            Middleware(AuthMiddleware, keys=parse_api_keys(settings.api_keys)),
            Middleware(CancelOnDisconnect),
        ],
    )
    app.state.started = time.monotonic()
    app.state.settings = settings
    app.state.runners = runners
    app.state.store = store
    app.state.metrics = metrics
    app.state.usage = usage
    # its workers start and stop with the lifespan
    app.state.renderer = TemplateSandbox(on_failure=metrics.template_failed)
    return app
