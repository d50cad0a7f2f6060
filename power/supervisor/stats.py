"""A loaded runner as ``RunnerStats``: the frozen snapshot ``/api/ps`` and metrics read."""

from __future__ import annotations

import math
import time

import msgspec

from power.supervisor import policy
from power.supervisor.record import LoadedRunner
from power.supervisor.service import RunnerStats, ServedModel
from proto import CpuMode

__all__ = ["runner_stats"]


def runner_stats(
    loaded: LoadedRunner, rss: int, *, setting: str, requested: CpuMode, since_expiry: float
) -> RunnerStats:
    """``loaded`` now: ``rss`` measured by the caller, ``setting`` and ``requested`` the CPU
    mode setting and what it asks runners for, ``since_expiry`` the clock its expiry uses."""
    ready, hello = loaded.runner.ready, loaded.runner.hello
    n_ctx = ready.n_ctx if ready is not None else loaded.params.n_ctx
    mode = ready.cpu_mode if ready is not None else loaded.params.cpu_mode
    default = requested
    if hello is not None:
        default, _ = policy.default_cpu_mode(setting, hello)
    served = loaded.served or {loaded.model.name: (loaded.model, n_ctx)}
    models = tuple(
        ServedModel(
            name=m.name,
            digest=m.digest,
            details=msgspec.to_builtins(m.details),
            context_length=min(own, n_ctx),
        )
        for m, own in served.values()
    )
    return RunnerStats(
        pid=loaded.runner.pid,
        models=models,
        n_ctx=n_ctx,
        n_vocab=ready.n_vocab if ready is not None else 0,
        num_parallel=ready.num_parallel if ready is not None else 1,
        rss=rss,
        vram=loaded.vram,
        all_on_gpu=loaded.all_on_gpu,
        expires_at=_expires_at(loaded, since_expiry),
        requests_in_flight=loaded.refcount,
        queued=loaded.queued,
        mean_wait_s=round(loaded.wait_total_s / loaded.waits, 6) if loaded.waits else 0.0,
        load_s=loaded.runner.load_s,
        cpu_mode=str(mode),
        cpu_mode_is_default=mode == default,
    )


def _expires_at(loaded: LoadedRunner, now: float) -> float | None:
    """Wall-clock expiry; a busy runner's is estimated as now + keep_alive, as Ollama does."""
    if loaded.expires_at is not None:
        return time.time() + max(0.0, loaded.expires_at - now)
    if math.isinf(loaded.keep_alive_s):
        return None
    return time.time() + max(0.0, loaded.keep_alive_s)
