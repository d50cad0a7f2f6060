"""Scheduling policy as pure functions over snapshots: reuse, eviction order, expiry.

Nothing here touches processes or the event loop, so every rule is testable with plain values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from proto import CpuMode, Hello, LoadParams

__all__ = [
    "RunnerSnapshot",
    "default_cpu_mode",
    "eviction_order",
    "expiry_deadline",
    "pick_victim",
    "requested_cpu_mode",
    "serves",
]

_CPU_SETTING = {"auto": CpuMode.AUTO, "on": CpuMode.EXTRA, "off": CpuMode.PLAIN}


@dataclass(frozen=True, slots=True)
class RunnerSnapshot:
    key: str
    name: str
    refcount: int
    keep_alive_s: float
    last_used: float  # monotonic seconds of the last release (or load)


def serves(loaded: LoadParams, wanted: LoadParams, asked: LoadParams | None = None) -> bool:
    """Can a runner loaded with ``loaded`` serve a request that asks for ``wanted``?

    Unlike Ollama, a smaller context is served by the loaded larger one instead of reloading,
    and a negative ``n_gpu_layers`` or ``main_gpu`` (automatic) matches whatever is loaded.
    ``loaded`` is what placement made of ``asked``, the load's request: a GPU setting matches
    either, since placement changes some (999 layers are the model's 31, or 0 without a GPU)
    and a request asking the same again must not reload, every time, to the same placement.
    """
    asked = loaded if asked is None else asked
    if wanted.n_ctx > loaded.n_ctx:
        return False
    if wanted.n_gpu_layers >= 0 and wanted.n_gpu_layers not in (
        loaded.n_gpu_layers,
        asked.n_gpu_layers,
    ):
        return False
    return (
        wanted.model_path == loaded.model_path
        and wanted.lora_paths == loaded.lora_paths
        and wanted.projector_path == loaded.projector_path
        and wanted.n_batch == loaded.n_batch
        and (wanted.main_gpu < 0 or wanted.main_gpu in (loaded.main_gpu, asked.main_gpu))
        and (wanted.n_threads == 0 or wanted.n_threads == loaded.n_threads)
        and wanted.use_mmap == loaded.use_mmap
        and wanted.use_mlock == loaded.use_mlock
        and wanted.flash_attn == loaded.flash_attn
        and wanted.kv_cache_type == loaded.kv_cache_type
        and wanted.embedding == loaded.embedding
        and wanted.num_parallel <= loaded.num_parallel
    )


def requested_cpu_mode(setting: str) -> CpuMode:
    """The ``cpu_extra_buffers`` setting as the mode runners are asked to load in."""
    return _CPU_SETTING[setting]


def default_cpu_mode(setting: str, hello: Hello) -> tuple[CpuMode, str]:
    """The mode a runner that said ``hello`` loads in by default under ``setting``, and why."""
    if setting == "auto":
        return hello.auto_cpu_mode, f"cpu_extra_buffers = auto: {hello.auto_cpu_mode_why}"
    return _CPU_SETTING[setting], f"cpu_extra_buffers = {setting}"


def eviction_order(runners: Iterable[RunnerSnapshot]) -> list[RunnerSnapshot]:
    """Best victim first: idle before busy, then shortest keep_alive, least recently used, name."""
    return sorted(
        runners,
        key=lambda r: (r.refcount > 0, r.keep_alive_s, r.last_used, r.name),
    )


def pick_victim(runners: Iterable[RunnerSnapshot]) -> RunnerSnapshot | None:
    """The runner to unload to make room, or None when every runner has requests in flight."""
    for runner in eviction_order(runners):
        if runner.refcount == 0:
            return runner
    return None


def expiry_deadline(now: float, keep_alive_s: float) -> float | None:
    """When an idle runner with this keep_alive unloads (None = never; ``now`` = at once)."""
    if math.isinf(keep_alive_s):
        return None
    return now + max(0.0, keep_alive_s)
