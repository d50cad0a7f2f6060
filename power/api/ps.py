"""GET /api/ps (loaded models), GET|HEAD / and /api/version."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import msgspec
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from power import __version__
from power.api.response import json_response
from power.api.schemas import PsModel
from power.supervisor.service import RunnerExit, Runners, RunnerStats

__all__ = ["OLLAMA_VERSION", "routes"]

# The Ollama release whose HTTP API this release implements: the Ollama source snapshot the
# wire behaviour is matched against. Clients gate features on this number (``/api/version``),
# so raise it only together with the behaviour of the release it names.
OLLAMA_VERSION = "0.33.0"

_FOREVER = timedelta(days=365 * 292)


def _expires_at(when: float | None) -> str:
    """RFC 3339 in local time; forever, and anything past it (a datetime ends at year 9999),
    shows as now + Go's longest duration, as Ollama does."""
    now = datetime.now().astimezone()
    left = _FOREVER.total_seconds() if when is None else when - now.timestamp()
    left = min(max(0.0, left), _FOREVER.total_seconds())  # NaN -> 0
    return (now + timedelta(seconds=left)).isoformat()


def ps_models(stats: list[RunnerStats]) -> list[PsModel]:
    """One entry per model each runner serves, newest expiry first."""
    out = [
        PsModel(
            name=m.name,
            model=m.name,
            # Ollama's size is the model's memory: all in VRAM when every layer is offloaded
            size=r.vram if r.all_on_gpu and r.vram else r.rss + r.vram,
            digest=m.digest,
            details=m.details,
            expires_at=_expires_at(r.expires_at),
            size_vram=r.vram,
            context_length=m.context_length,
            pid=r.pid,
            memory={"rss": r.rss, "vram": r.vram},
            requests_in_flight=r.requests_in_flight,
            queued=r.queued,
            mean_wait_s=r.mean_wait_s,
            num_parallel=r.num_parallel,
            cpu_mode=msgspec.UNSET if r.cpu_mode_is_default else r.cpu_mode,
        )
        for r in stats
        for m in r.models
    ]
    out.sort(key=lambda m: m.expires_at, reverse=True)
    return out


def exits_shown(exits: tuple[RunnerExit, ...]) -> list[dict[str, object]]:
    """The last runner exits, newest first: why a model's runner went (A3S Power's extra)."""
    return [
        {
            "model": e.model,
            "pid": e.pid,
            "reason": e.reason,
            "exit": e.how,
            "at": datetime.fromtimestamp(e.at).astimezone().isoformat(),
            "stderr_tail": list(e.stderr_tail),
        }
        for e in reversed(exits)
    ]


async def ps(request: Request) -> Response:
    runners: Runners = request.app.state.runners
    models = ps_models(await runners.stats())
    exits = exits_shown(runners.status().recent_exits)
    return json_response({"models": models, "recent_exits": exits})


async def health(request: Request) -> Response:
    """For load balancers and service managers: 200 while serving, 503 while draining."""
    status = request.app.state.runners.status()
    body = {
        "status": "draining" if status.draining else "ok",
        "version": __version__,
        "uptime_seconds": round(time.monotonic() - request.app.state.started, 3),
        "loaded_models": status.loaded_models,
    }
    return json_response(body, 503 if status.draining else 200)


async def root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


async def version(request: Request) -> Response:
    """Ollama's version (what clients compare), and A3S Power's own in an extra field."""
    return json_response({"version": OLLAMA_VERSION, "power_version": __version__})


routes = [
    Route("/", root, methods=["GET", "HEAD"]),
    Route("/health", health, methods=["GET", "HEAD"]),
    Route("/api/version", version, methods=["GET", "HEAD"]),
    Route("/api/ps", ps, methods=["GET"]),
]
