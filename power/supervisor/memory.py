"""What a model will cost, what the machine has, and how many layers go to the GPU.

``estimate`` reads only the GGUF header: weights (the file's tensor data), the KV cache for
``n_ctx * num_parallel`` tokens (``n_ctx`` at most the training context, as the runner clamps it),
and llama.cpp's compute buffers for one batch (at most the context, for a causal model). An
embedding model's runner holds instead one embedding context of ``max(n_ctx, n_batch)`` cells
and a generation context of at most 256 cells per sequence.
``place`` turns an estimate and the GPUs' free memory into llama.cpp's offload settings: the
whole model on the one GPU with the most room when it fits there (Ollama's default), else split
by layers over every GPU in proportion to their room (always, with ``OLLAMA_SCHED_SPREAD``),
else as many layers as fit.
``probe_machine`` is the default ``MemoryProbe``: free RAM from psutil, NVIDIA GPUs and each
process's VRAM from ``nvidia-smi``, and Apple's unified memory under Metal. Tests pass their
own probe.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import psutil

from power.errors import OptionTooLargeError
from power.options import DEFAULT_NUM_BATCH
from proto import LoadParams

__all__ = [
    "SPLIT_LAYER",
    "SPLIT_NONE",
    "Estimate",
    "Gpu",
    "MachineMemory",
    "MemoryProbe",
    "Placement",
    "blame_options",
    "estimate",
    "gpu_layers_that_fit",
    "place",
    "probe_gpus",
    "probe_machine",
    "visible_order",
]

log = logging.getLogger(__name__)

_KV_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32}
_RUNNER_BASE = 64 * 2**20  # the runner process itself: Python, llama.cpp, numpy
_EMBEDDING_MODEL_GEN_CTX = 256  # runner.llama_engine.EMBEDDING_MODEL_GEN_CTX


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    name: str
    total: int
    free: int
    library: str  # "cuda" or "metal"
    utilization: float | None = None  # compute, 0..1, where the driver says (probe_gpus)


@dataclass(frozen=True, slots=True)
class MachineMemory:
    available_ram: int
    gpus: tuple[Gpu, ...] = field(default_factory=tuple)
    # VRAM in use per process id, where the driver tells (NVIDIA); None where it cannot
    vram_by_pid: Mapping[int, int] | None = None


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
    embedding: bool = False,
) -> Estimate:
    arch = str(metadata.get("general.architecture", ""))

    def meta(key: str, default: int) -> int:
        value = metadata.get(f"{arch}.{key}")
        if isinstance(value, list):  # per-layer arrays (e.g. head_count_kv): take the largest
            value = max(filter(_is_count, value), default=None)
        return value if _is_count(value) else default

    layers = meta("block_count", 1)
    embd = meta("embedding_length", 0)
    heads = max(1, meta("attention.head_count", 1))
    heads_kv = meta("attention.head_count_kv", heads)
    key_len = meta("attention.key_length", embd // heads)
    value_len = meta("attention.value_length", embd // heads)
    ctx_train = meta("context_length", 0)
    per_seq = max(4, min(n_ctx, ctx_train) if ctx_train > 0 else n_ctx)  # as the runner clamps
    n_par = max(1, num_parallel)
    batch = min(max(n_batch, n_par), per_seq * n_par)  # as the runner clamps it
    causal = bool(metadata.get(f"{arch}.attention.causal", True))
    vocab = meta("vocab_size", 0) or 32000

    def compute(batch: int, cells: int) -> int:
        """Logits for one batch plus activations: a generous bound for llama.cpp's compute
        buffers (it never batches more than a causal context holds)."""
        return 4 * (min(batch, cells) if causal else batch) * (vocab + 4 * embd) + 32 * 2**20

    cells = per_seq * n_par
    work = compute(batch, cells)
    if embedding:  # runner.llama_engine: a small generation context beside the embedding one,
        # which holds the longest text or one decode, whichever is more; its batch is the whole
        # context, so that one text of up to n_ctx tokens is embedded in one decode
        gen = min(per_seq, _EMBEDDING_MODEL_GEN_CTX)
        embed_cells = max(per_seq, batch)
        cells = gen * n_par + embed_cells
        work = compute(min(batch, gen), gen * n_par) + compute(embed_cells, embed_cells)
    per_elem = _KV_BYTES.get(kv_cache_type.lower(), 2.0)
    kv = int(layers * cells * heads_kv * (key_len + value_len) * per_elem)
    return Estimate(weights=file_size, kv_cache=kv, compute=work, n_layers=layers)


def _is_count(value: object) -> TypeGuard[int]:
    """Whether a metadata value is a count llama.cpp reads (a uint32). The file is the client's
    and may hold any type under any key: one that is not is as good as absent."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32


def blame_options(
    metadata: Mapping[str, Any],
    params: LoadParams,
    *,
    file_size: int,
    need: int,
    room: int,
    default_ctx: int,
) -> None:
    """Raise ``OptionTooLargeError`` when a model that needs ``need`` bytes would fit ``room``
    with ``num_ctx`` and ``num_batch`` at their defaults: it names the costlier of the two.
    Otherwise the model itself is too large: return."""

    def total(n_ctx: int, n_batch: int) -> int:
        return estimate(
            metadata,
            file_size=file_size,
            n_ctx=n_ctx,
            num_parallel=params.num_parallel,
            n_batch=n_batch,
            kv_cache_type=params.kv_cache_type,
            embedding=params.embedding,
        ).total

    ctx, batch = min(params.n_ctx, default_ctx), min(params.n_batch, DEFAULT_NUM_BATCH)
    asked = total(params.n_ctx, params.n_batch)
    if need - (asked - total(ctx, batch)) > room:
        return
    savings = {
        "num_ctx": (asked - total(ctx, params.n_batch), params.n_ctx),
        "num_batch": (asked - total(params.n_ctx, batch), params.n_batch),
    }
    option, (_, value) = max(savings.items(), key=lambda item: item[1][0])
    raise OptionTooLargeError(
        f'option "{option}" = {value} needs more memory than is available: the model would'
        f" take {need / 2**30:.1f} GiB, {max(0, room) / 2**30:.1f} GiB is free; lower {option}",
        option=option,
    )


def gpu_layers_that_fit(est: Estimate, gpus: tuple[Gpu, ...], overhead: int) -> int:
    """How many layers (output layer included) to offload when the user did not say."""
    if not gpus:
        return 0
    free = sum(max(0, g.free - overhead) for g in gpus) - est.compute
    if free <= 0:
        return 0
    return min(est.n_layers + 1, free // max(1, est.per_layer()))


SPLIT_NONE, SPLIT_LAYER = 0, 1  # llama.cpp's llama_split_mode


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a model's layers go. ``main_gpu`` is a position among the visible GPUs."""

    n_gpu_layers: int
    main_gpu: int = 0
    split_mode: int = SPLIT_LAYER
    tensor_split: tuple[float, ...] = ()
    on_gpu: int = 0  # bytes expected in VRAM
    whole: bool = True  # False: some layers stay on the CPU for want of VRAM


def place(
    est: Estimate,
    gpus: tuple[Gpu, ...],
    *,
    overhead: int,
    spread: bool,
    layers: int = -1,
    main_gpu: int = -1,
) -> Placement:
    """The offload for ``est`` (``layers`` < 0: as many as fit; ``main_gpu`` < 0: any GPU)."""
    if not gpus or layers == 0:
        return Placement(0)
    rooms = [max(0, g.free - overhead) for g in gpus]
    every = est.n_layers + 1  # the blocks and the output layer
    need = est.weights + est.kv_cache + est.compute
    choices = [main_gpu] if 0 <= main_gpu < len(gpus) else list(range(len(gpus)))
    first = max(choices, key=lambda i: rooms[i])
    if layers > 0:
        n = min(layers, every)
        return Placement(n, first, SPLIT_LAYER, _shares(rooms), _on_gpu(est, n))
    if not spread:
        fitting = [i for i in choices if rooms[i] >= need]
        if fitting:
            best = max(fitting, key=lambda i: rooms[i])
            return Placement(every, best, SPLIT_NONE, (), need)
    if sum(rooms) >= need:
        return Placement(every, first, SPLIT_LAYER, _shares(rooms), need)
    n = gpu_layers_that_fit(est, gpus, overhead)
    return Placement(n, first, SPLIT_LAYER, _shares(rooms), _on_gpu(est, n), whole=False)


def _shares(rooms: list[int]) -> tuple[float, ...]:
    total = sum(rooms)
    if len(rooms) < 2 or total <= 0:
        return ()
    return tuple(r / total for r in rooms)


def _on_gpu(est: Estimate, layers: int) -> int:
    if layers <= 0:
        return 0
    return min(est.weights + est.kv_cache, layers * est.per_layer()) + est.compute


def _nvidia_smi(query: str) -> list[list[str]] | None:
    """The CSV rows nvidia-smi answers ``query`` with; None without nvidia-smi or on failure."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, query, "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed: %s", exc)
        return None
    return [[p.strip() for p in line.split(",")] for line in out.splitlines()]


def _nvidia_vram_by_pid() -> dict[int, int] | None:
    rows = _nvidia_smi("--query-compute-apps=pid,used_memory")
    if rows is None:
        return None
    used: dict[int, int] = {}
    for parts in rows:
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            used[int(parts[0])] = used.get(int(parts[0]), 0) + int(parts[1]) * 2**20
    return used


def _nvidia(*, utilization: bool = False) -> tuple[Gpu, ...]:
    fields = "index,name,memory.total,memory.free" + (",utilization.gpu" if utilization else "")
    rows = _nvidia_smi(f"--query-gpu={fields}") or []
    gpus = []
    mib = 2**20
    for parts in rows:
        if len(parts) >= 4:
            busy = parts[4] if len(parts) > 4 else ""
            gpus.append(
                Gpu(int(parts[0]), parts[1], int(parts[2]) * mib, int(parts[3]) * mib, "cuda",
                    utilization=int(busy) / 100 if busy.isdigit() else None)
            )  # fmt: skip
    return tuple(visible_order(gpus, os.environ.get("CUDA_VISIBLE_DEVICES")))


def probe_gpus() -> tuple[Gpu, ...]:
    """NVIDIA GPUs with their memory and utilization, for metrics; () without one (blocking)."""
    return _nvidia(utilization=True)


def visible_order(gpus: list[Gpu], visible: str | None) -> list[Gpu]:
    """The GPUs CUDA will show a runner, in its order (positions are llama.cpp's device ids).

    Indices in ``CUDA_VISIBLE_DEVICES`` select and order; a list holding UUIDs is left to CUDA.
    Runners enumerate in PCI bus order, as nvidia-smi does (``CUDA_DEVICE_ORDER``).
    """
    if visible is None:
        return gpus
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    if not all(v.isdigit() for v in wanted):
        return gpus
    by_index = {g.index: g for g in gpus}
    out: list[Gpu] = []
    for v in wanted:
        gpu = by_index.get(int(v))
        if gpu is None:
            break  # CUDA ignores the rest of the list after an invalid entry
        if gpu not in out:
            out.append(gpu)
    return out


def _metal(available_ram: int) -> tuple[Gpu, ...]:
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        total = psutil.virtual_memory().total
        return (Gpu(0, "Apple Metal", total, available_ram, "metal"),)
    return ()


def probe_machine() -> MachineMemory:
    """Free RAM and GPUs, measured now (blocking: call it through ``asyncio.to_thread``)."""
    available = int(psutil.virtual_memory().available)
    gpus = _nvidia()
    if gpus:
        return MachineMemory(available_ram=available, gpus=gpus, vram_by_pid=_nvidia_vram_by_pid())
    return MachineMemory(available_ram=available, gpus=_metal(available))
