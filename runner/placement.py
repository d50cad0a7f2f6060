"""Where a load put the model: the buffers llama.cpp allocated, and which of them are on a GPU.

llama.cpp has no C function that tells what a model and its context hold on each device (its
``llama_get_memory_breakdown`` returns a C++ map), but it logs every buffer it allocates, with
the buffer's type (``load_tensors:        CUDA0 model buffer size =   812.00 MiB``; likewise
the KV cache, the compute and output buffers, LoRA adapters, a projector's compute buffer) and
how many layers it offloaded. While a load runs, ``NativeLog`` hands its INFO lines to a
``Placement``. The runner's VRAM is the size of the buffers whose type is a GPU's own memory
(``gpu_buffer_types``, from ggml's device API): ``CUDA0`` counts, ``CUDA_Host`` (pinned system
memory) and ``CPU_Mapped`` do not. Memory a backend takes on its own (the CUDA context, cuBLAS'
workspace, ggml's CUDA pool) is in no buffer, and a projector logs only the total of its
weights, so neither is counted; the gateway prefers the driver's per-process figure where there
is one. The llama.cpp release is pinned (``runner.llama_compat``), and a model test
checks that these lines are still seen.
"""

from __future__ import annotations

import ctypes
import functools
import re
from collections.abc import Collection

from runner.ggml_api import DEVICE_TYPE_GPU, ggml_fn

__all__ = ["Placement", "gpu_buffer_types"]

_MIB = 1 << 20
# "sched_reserve:        CPU compute buffer size =    98.25 MiB"
_BUFFER = re.compile(r"(\w+):\s+(\S+)\s+(\S.*?) buffer size =\s*([0-9.]+) MiB\s*")
# "load_tensors: offloaded 31/31 layers to GPU"
_OFFLOADED = re.compile(r"\w+: offloaded (\d+)/\d+ layers to GPU\s*")


class Placement:
    """The buffers one load allocated, by buffer type and use, and the layers it offloaded."""

    def __init__(self) -> None:
        # (who logged it, buffer type, use) -> bytes; e.g. ("sched_reserve", "CUDA0", "compute")
        self.buffers: dict[tuple[str, str, str], int] = {}
        self.gpu_layers = 0

    def feed(self, line: str) -> None:
        """Take one line of llama.cpp's log (lines about anything else are ignored)."""
        if m := _BUFFER.fullmatch(line):
            source, buffer_type, use, mib = m.groups()
            size = round(float(mib) * _MIB)
            key = (source, buffer_type, use)
            # A compute buffer is reserved again when its graph changes: the last size holds
            # (per source: the projector's compute buffers are the projector's own).
            self.buffers[key] = size if use == "compute" else self.buffers.get(key, 0) + size
        elif m := _OFFLOADED.fullmatch(line):
            self.gpu_layers = int(m[1])

    def bytes_on(self, buffer_types: Collection[str]) -> int:
        """Bytes of the buffers of these types."""
        return sum(size for (_, kind, _), size in self.buffers.items() if kind in buffer_types)

    def describe(self) -> str:
        """E.g. ``CPU_Mapped model 92.1 MiB, CPU KV 11.2 MiB``, for the runner's log."""
        parts = [f"{kind} {use} {n / _MIB:.1f} MiB" for (_, kind, use), n in self.buffers.items()]
        return ", ".join(parts) or "no buffers seen"


@functools.cache
def gpu_buffer_types() -> frozenset[str]:
    """The names of the buffer types that are the memory of a GPU llama.cpp sees (``CUDA0``);
    none without one. Call after ``llama_backend_init``."""
    dev_count = ggml_fn("ggml_backend_dev_count", ctypes.c_size_t)
    dev_get = ggml_fn("ggml_backend_dev_get", ctypes.c_void_p, ctypes.c_size_t)
    dev_type = ggml_fn("ggml_backend_dev_type", ctypes.c_int, ctypes.c_void_p)
    dev_buffer_type = ggml_fn("ggml_backend_dev_buffer_type", ctypes.c_void_p, ctypes.c_void_p)
    buft_name = ggml_fn("ggml_backend_buft_name", ctypes.c_char_p, ctypes.c_void_p)
    names = set()
    for i in range(dev_count()):
        dev = dev_get(i)
        if dev and dev_type(dev) == DEVICE_TYPE_GPU:
            buft = dev_buffer_type(dev)
            name = buft_name(buft) if buft else None
            if name:
                names.add(name.decode(errors="replace"))
    return frozenset(names)
