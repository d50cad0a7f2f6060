"""What a model will cost, what the machine has, and how many layers go to the GPU.

``estimate`` reads only the GGUF header: weights (the file's tensor data), the KV cache for
``n_ctx * num_parallel`` tokens, and llama.cpp's compute buffers. ``probe_machine`` is the
default ``MemoryProbe``: free RAM from psutil, NVIDIA GPUs from ``nvidia-smi`` and Apple's
unified memory under Metal. Tests pass their own probe.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

__all__ = [
    "Estimate",
    "Gpu",
    "MachineMemory",
    "MemoryProbe",
    "estimate",
    "gpu_layers_that_fit",
    "probe_machine",
]

log = logging.getLogger(__name__)

_KV_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32}
_RUNNER_BASE = 64 * 2**20  # the runner process itself: Python, llama.cpp, numpy


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    name: str
    total: int
    free: int
    library: str  # "cuda" or "metal"


@dataclass(frozen=True, slots=True)
class MachineMemory:
    available_ram: int
    gpus: tuple[Gpu, ...] = field(default_factory=tuple)


MemoryProbe = Callable[[], MachineMemory]


@dataclass(frozen=True, slots=True)
class Estimate:
    weights: int
    kv_cache: int
    compute: int
    n_layers: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + _RUNNER_BASE

    def per_layer(self) -> int:
        return (self.weights + self.kv_cache) // max(1, self.n_layers)


def estimate(
    metadata: Mapping[str, Any],
    *,
    file_size: int,
    n_ctx: int,
    num_parallel: int,
    n_batch: int,
    kv_cache_type: str = "f16",
) -> Estimate:
    arch = str(metadata.get("general.architecture", ""))

    def meta(key: str, default: int) -> int:
        value = metadata.get(f"{arch}.{key}", default)
        if isinstance(value, list):  # per-layer arrays (e.g. head_count_kv): take the largest
            value = max(value) if value else default
        return int(value)

    layers = meta("block_count", 1)
    embd = meta("embedding_length", 0)
    heads = max(1, meta("attention.head_count", 1))
    heads_kv = meta("attention.head_count_kv", heads)
    key_len = meta("attention.key_length", embd // heads)
    value_len = meta("attention.value_length", embd // heads)
    tokens = n_ctx * max(1, num_parallel)
    per_elem = _KV_BYTES.get(kv_cache_type.lower(), 2.0)
    kv = int(layers * tokens * heads_kv * (key_len + value_len) * per_elem)
    vocab = int(metadata.get(f"{arch}.vocab_size", 0) or 32000)
    # logits for one batch plus activations: a generous bound for llama.cpp's compute buffers
    compute = 4 * n_batch * (vocab + 4 * embd) + 32 * 2**20
    return Estimate(weights=file_size, kv_cache=kv, compute=compute, n_layers=layers)


def gpu_layers_that_fit(est: Estimate, gpus: tuple[Gpu, ...], overhead: int) -> int:
    """How many layers (output layer included) to offload when the user did not say."""
    if not gpus:
        return 0
    free = sum(max(0, g.free - overhead) for g in gpus) - est.compute
    if free <= 0:
        return 0
    return min(est.n_layers + 1, free // max(1, est.per_layer()))


def _nvidia() -> tuple[Gpu, ...]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    query = "--query-gpu=index,name,memory.total,memory.free"
    try:
        out = subprocess.run(
            [exe, query, "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed: %s", exc)
        return ()
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            mib = 2**20
            gpus.append(
                Gpu(int(parts[0]), parts[1], int(parts[2]) * mib, int(parts[3]) * mib, "cuda")
            )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        keep = {v.strip() for v in visible.split(",") if v.strip()}
        gpus = [g for g in gpus if str(g.index) in keep]
    return tuple(gpus)


def _metal(available_ram: int) -> tuple[Gpu, ...]:
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        total = psutil.virtual_memory().total
        return (Gpu(0, "Apple Metal", total, available_ram, "metal"),)
    return ()


def probe_machine() -> MachineMemory:
    """Free RAM and GPUs, measured now (blocking: call it through ``asyncio.to_thread``)."""
    available = int(psutil.virtual_memory().available)
    return MachineMemory(available_ram=available, gpus=_nvidia() or _metal(available))
