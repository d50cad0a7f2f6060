"""GET /api/ps (loaded models), GET|HEAD / and /api/version."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import msgspec
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from power import __version__
from power.api.schemas import PsModel
from power.supervisor import Loaded, Supervisor
from power.supervisor.policy import default_cpu_mode

__all__ = ["routes"]

_encoder = msgspec.json.Encoder()
_FOREVER = timedelta(days=365 * 292)


def _expires_at(slot: Loaded, now_mono: float) -> str:
    now = datetime.now().astimezone()
    if slot.expires_at is not None:
        left = slot.expires_at - now_mono
    else:  # busy: estimated as now + keep_alive, as Ollama does
        left = slot.keep_alive_s
    # forever, and anything past it (a datetime ends at year 9999), shows as Go's max duration
    left = min(max(0.0, left), _FOREVER.total_seconds())  # NaN -> 0
    return (now + timedelta(seconds=left)).isoformat()


def ps_models(supervisor: Supervisor) -> list[PsModel]:
    now_mono = time.monotonic()
    out: list[PsModel] = []
    for slot in supervisor.loaded():
        rss = slot.runner.stats_rss()
        ready = slot.runner.ready
        vram = slot.vram
        # Ollama's size is the model's memory: all in VRAM when every layer is offloaded
        size = vram if slot.all_on_gpu and vram else rss + vram
        mode = ready.cpu_mode if ready is not None else slot.params.cpu_mode
        hello = slot.runner.hello
        default = supervisor.cpu_mode
        if hello is not None:
            default, _ = default_cpu_mode(supervisor.settings.cpu_extra_buffers, hello)
        n_ctx = ready.n_ctx if ready is not None else slot.params.n_ctx
        served = slot.served or {slot.model.name: (slot.model, n_ctx)}
        out.extend(
            PsModel(
                name=model.name,
                model=model.name,
                size=size,
                digest=model.digest,
                details=msgspec.to_builtins(model.details),
                expires_at=_expires_at(slot, now_mono),
                size_vram=vram,
                context_length=min(own_ctx, n_ctx),
                pid=slot.runner.pid,
                memory={"rss": rss, "vram": vram},
                requests_in_flight=slot.refcount,
                queued=slot.queued,
                mean_wait_s=round(slot.wait_total_s / slot.waits, 6) if slot.waits else 0.0,
                num_parallel=ready.num_parallel if ready is not None else 1,
                cpu_mode=str(mode) if mode != default else msgspec.UNSET,
            )
            for model, own_ctx in served.values()
        )
    out.sort(key=lambda m: m.expires_at, reverse=True)
    return out


async def ps(request: Request) -> Response:
    models = ps_models(request.app.state.supervisor)
    return Response(_encoder.encode({"models": models}), media_type="application/json")


async def root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


async def version(request: Request) -> Response:
    return Response(_encoder.encode({"version": __version__}), media_type="application/json")


routes = [
    Route("/", root, methods=["GET", "HEAD"]),
    Route("/api/version", version, methods=["GET", "HEAD"]),
    Route("/api/ps", ps, methods=["GET"]),
]
