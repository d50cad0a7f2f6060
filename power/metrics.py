"""Prometheus metrics, gateway only, on a registry the daemon owns (never the global one).

``Metrics`` listens in three places: every finished request (an ``Observer``: HTTP series by
route template, and for inference the model's duration, time to first token, tokens and
cost), the supervisor's events (loads, exits, evictions, queue waits), and a scrape (gauges
read from the supervisor's frozen stats and the GPUs, measured then). Runners report their
counts and timings in ``Done.stats``, so no multiprocess mode is needed. Every series is in
the README.

A scrape probes the GPUs (``nvidia-smi``, a process) at most once per ``GPU_PROBE_TTL_S``, and
scrapes that arrive meanwhile share that one probe. It also drops the series of models that
are gone from the store and no longer loaded: a client that copies, runs and deletes model
after model would otherwise grow ``/metrics`` by every name it ever used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from starlette.requests import Request
from starlette.responses import Response

from power.observe import RequestInfo
from power.store.names import ModelName
from power.supervisor.memory import Gpu, probe_gpus
from power.supervisor.service import STOP_REASONS, RunnerExit, Runners

if TYPE_CHECKING:
    from power.settings import Settings
    from power.store import ModelStore

__all__ = ["GPU_PROBE_TTL_S", "Metrics", "metrics_endpoint"]

_Metric = TypeVar("_Metric", bound=MetricWrapperBase)

GPU_PROBE_TTL_S = 2.0  # well under any scrape interval; a probe forks nvidia-smi

# The ``method`` label: a client may send any token as its method (even to a 404), and every new
# label value would be a series kept forever, so methods outside HTTP's own are counted as one.
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)

# 10 ms to 10 min
_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    def __init__(
        self,
        settings: Settings,
        *,
        gpu_probe: Callable[[], tuple[Gpu, ...]] = probe_gpus,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._gpu_probe = gpu_probe
        self._clock = clock
        self._gpus: tuple[Gpu, ...] = ()
        self._gpus_at: float | None = None
        self._probing: asyncio.Future[tuple[Gpu, ...]] | None = None
        # each model's labelled series, so that they can be dropped with the model
        self._series: dict[str, set[tuple[MetricWrapperBase, tuple[str, ...]]]] = {}
        self.registry = reg = CollectorRegistry()
        self.http_requests = Counter(
            "power_http_requests", "HTTP requests, by route template",
            ["route", "method", "status"], registry=reg,
        )  # fmt: skip
        self.http_seconds = Histogram(
            "power_http_request_duration_seconds", "HTTP request duration (a stream: to its end)",
            ["route"], buckets=_LATENCY, registry=reg,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            "power_inference_duration_seconds", "Inference request duration, arrival to last token",
            ["model"], buckets=_LATENCY, registry=reg,
        )  # fmt: skip
        self.ttft_seconds = Histogram(
            "power_ttft_seconds", "Time to first token, from the request's arrival", ["model"],
            buckets=_LATENCY, registry=reg,
        )  # fmt: skip
        self.tokens = Counter(
            "power_inference_tokens", "Tokens processed: type input (whole prompts) or output",
            ["model", "type"], registry=reg,
        )  # fmt: skip
        self.cost = Gauge(
            "power_cost_dollars", "What the tokens so far would cost at the configured prices"
            " (only ever grows)", ["model"], registry=reg,
        )  # fmt: skip
        self.load_seconds = Histogram(
            "power_model_load_duration_seconds", "Model load time (runner start to ready)",
            ["model"], buckets=_LATENCY, registry=reg,
        )  # fmt: skip
        self.memory = Gauge(
            "power_model_memory_bytes", "Memory a loaded model's runner holds, measured at scrape",
            ["model", "kind"], registry=reg,
        )  # fmt: skip
        self.evictions = Counter(
            "power_model_evictions", "Models unloaded, by reason: lru, memory, expired, request,"
            " shutdown", ["model", "reason"], registry=reg,
        )  # fmt: skip
        self.exits = Counter(
            "power_runner_exits", "Runner processes ended, by reason (an eviction reason, hung,"
            " crash)", ["model", "reason"], registry=reg,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "power_queue_depth", "Requests waiting for a model load or a sequence", registry=reg
        )
        self.queue_wait = Histogram(
            "power_queue_wait_seconds", "Time requests waited for admission", buckets=_LATENCY,
            registry=reg,
        )  # fmt: skip
        self.in_flight = Gauge(
            "power_requests_in_flight", "Requests using a model now", ["model"], registry=reg
        )
        self.loaded_models = Gauge("power_loaded_models", "Models loaded now", registry=reg)
        self.gpu_memory = Gauge(
            "power_gpu_memory_bytes", "GPU memory, kind used or total (absent without a GPU)",
            ["device", "kind"], registry=reg,
        )  # fmt: skip
        self.gpu_utilization = Gauge(
            "power_gpu_utilization", "GPU compute utilization, 0 to 1 (absent without a GPU)",
            ["device"], registry=reg,
        )  # fmt: skip
        self.template_failures = Counter(
            "power_chat_template_failures", "Chat template renderings the sandbox stopped, by"
            " reason: memory, deadline, crash, quarantined", ["reason"], registry=reg,
        )  # fmt: skip

    # ------------------------------------------------------------------ Observer

    def request_done(self, info: RequestInfo) -> None:
        route = info.route or "unmatched"
        method = info.method if info.method in _METHODS else "other"
        self.http_requests.labels(route, method, str(info.status)).inc()
        self.http_seconds.labels(route).observe(info.duration_s)
        if not info.inference:
            return
        model = info.model
        self._of(model, self.inference_seconds).observe(info.duration_s)
        if info.ttft_s is not None:
            self._of(model, self.ttft_seconds).observe(info.ttft_s)
        self._of(model, self.tokens, "input").inc(info.prompt_tokens)
        self._of(model, self.tokens, "output").inc(info.output_tokens)
        spent = self._settings.price_of(model).cost(info.prompt_tokens, info.output_tokens)
        self._of(model, self.cost).inc(spent)

    def _of(self, model: str, metric: _Metric, *labels: str) -> _Metric:
        """``metric``'s series for ``model`` (and ``labels``), remembered under the model."""
        values = (model, *labels)
        self._series.setdefault(model, set()).add((metric, values))
        return metric.labels(*values)

    # ------------------------------------------------------------------ supervisor Events

    def runner_loaded(self, model: str, load_s: float) -> None:
        self._of(model, self.load_seconds).observe(load_s)

    def runner_exited(self, event: RunnerExit) -> None:
        self._of(event.model, self.exits, event.reason).inc()
        if event.reason in STOP_REASONS:
            self._of(event.model, self.evictions, event.reason).inc()

    def request_admitted(self, waited_s: float) -> None:
        self.queue_wait.observe(waited_s)

    # ------------------------------------------------------------------ the template sandbox

    def template_failed(self, reason: str) -> None:
        """A rendering stopped by the sandbox (called from its rendering threads)."""
        self.template_failures.labels(reason).inc()

    # ------------------------------------------------------------------ scrape

    async def refresh(self, runners: Runners, store: ModelStore | None = None) -> None:
        """Set the gauges from what the supervisor and the GPUs say now; with ``store``, drop
        the series of models neither in it nor loaded."""
        stats = await runners.stats()
        status = runners.status()
        self.queue_depth.set(status.queue_depth)
        self.loaded_models.set(status.loaded_models)
        for gauge in (self.memory, self.in_flight):
            gauge.clear()  # (unloaded models drop out)
        loaded = set()
        for runner in stats:
            for served in runner.models:
                loaded.add(served.name)
                self.memory.labels(served.name, "ram").set(runner.rss)
                self.memory.labels(served.name, "vram").set(runner.vram)
                self.in_flight.labels(served.name).set(runner.requests_in_flight)
        if store is not None and self._series:
            await self._forget_gone(store, loaded)
        gpus = await self._probed_gpus()
        self.gpu_memory.clear()
        self.gpu_utilization.clear()
        for gpu in gpus:
            device = str(gpu.index)
            self.gpu_memory.labels(device, "used").set(gpu.total - gpu.free)
            self.gpu_memory.labels(device, "total").set(gpu.total)
            if gpu.utilization is not None:
                self.gpu_utilization.labels(device).set(gpu.utilization)

    async def _forget_gone(self, store: ModelStore, loaded: set[str]) -> None:
        """Remove the series of each model that is neither in ``store`` nor ``loaded``. Only
        models seen before the store is read are candidates: one served meanwhile may be new."""
        candidates = [model for model in self._series if model not in loaded]
        try:
            present = await asyncio.to_thread(lambda: {name.key() for name in store.names()})
        except OSError:
            return  # (an unreadable store: better to keep series than to drop a live model's)
        for model in candidates:
            name = ModelName.parse(model)
            if name.is_valid() and name.key() in present:
                continue
            for metric, values in self._series.pop(model, ()):
                metric.remove(*values)

    async def _probed_gpus(self) -> tuple[Gpu, ...]:
        """The GPUs as probed at most ``GPU_PROBE_TTL_S`` ago, or as a probe now finds them.
        Scrapes that arrive while it runs wait for that same probe; one that gives up (its
        client gone) leaves it running for the others."""
        if self._gpus_at is not None and self._clock() - self._gpus_at < GPU_PROBE_TTL_S:
            return self._gpus
        if self._probing is None:
            self._probing = asyncio.ensure_future(asyncio.to_thread(self._gpu_probe))
            self._probing.add_done_callback(self._probed)
        return await asyncio.shield(self._probing)

    def _probed(self, probing: asyncio.Future[tuple[Gpu, ...]]) -> None:
        self._probing = None
        if not probing.cancelled() and probing.exception() is None:
            self._gpus, self._gpus_at = probing.result(), self._clock()


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    await metrics.refresh(request.app.state.runners, request.app.state.store)
    return Response(generate_latest(metrics.registry), media_type="text/plain; version=0.0.4")
