"""Prometheus metrics, gateway only, on a registry owned by the app (never the global one).

Runners report their counts and timings in ``Done.stats``, so no multiprocess mode is needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware", "metrics_endpoint"]


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    request_seconds: Histogram
    tokens: Counter
    prompt_tokens: Counter
    runner_exits: Counter
    loaded_models: Gauge

    @classmethod
    def create(cls) -> Metrics:
        reg = CollectorRegistry()
        return cls(
            registry=reg,
            requests=Counter(
                "power_http_requests", "HTTP requests", ["path", "method", "status"], registry=reg
            ),
            request_seconds=Histogram(
                "power_http_request_seconds", "HTTP request duration", ["path"], registry=reg
            ),
            tokens=Counter("power_generated_tokens", "Tokens generated", ["model"], registry=reg),
            prompt_tokens=Counter(
                "power_prompt_tokens", "Prompt tokens processed", ["model"], registry=reg
            ),
            runner_exits=Counter(
                "power_runner_exits", "Runner process exits", ["reason"], registry=reg
            ),
            loaded_models=Gauge("power_loaded_models", "Models loaded now", registry=reg),
        )


_KNOWN_PATHS = frozenset(
    {
        "/",
        "/api/generate",
        "/api/chat",
        "/api/tags",
        "/api/show",
        "/api/ps",
        "/api/copy",
        "/api/delete",
        "/api/create",
        "/api/version",
        "/api/pull",
        "/api/push",
        "/api/embed",
        "/api/embeddings",
        "/metrics",
    }
)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        label = (
            path
            if path in _KNOWN_PATHS
            else ("/api/blobs" if path.startswith("/api/blobs/") else "other")
        )
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(label, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(label).observe(time.perf_counter() - started)


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    metrics.loaded_models.set(len(await request.app.state.runners.stats()))
    return Response(generate_latest(metrics.registry), media_type="text/plain; version=0.0.4")
