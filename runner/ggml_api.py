"""ggml's backend-device C API, called through ctypes on llama-cpp-python's bundled libggml.

llama-cpp-python binds llama.cpp's ``llama_*`` functions but not ggml's device registry
(``ggml_backend_dev_*``, ``ggml_backend_reg_*``), which the runner needs to see its GPUs and to
reach llama.cpp's RPC backend. These are stable C functions of the pinned release
(``runner.llama_compat``); each is bound on first use.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

__all__ = ["DEVICE_TYPE_CPU", "DEVICE_TYPE_GPU", "device_memory", "ggml_fn"]

# ggml_backend_dev_type: CPU, GPU (own memory), IGPU (host memory), ACCEL, META
DEVICE_TYPE_CPU = 0
DEVICE_TYPE_GPU = 1


@functools.cache
def ggml_fn(name: str, restype: Any, *argtypes: Any) -> Any:
    """The C function ``name`` of libggml with this signature."""
    from llama_cpp import _ggml

    proto = ctypes.CFUNCTYPE(restype, *argtypes)
    return proto((name, _ggml.libggml))


def device_memory(dev: int) -> tuple[int, int]:
    """(free, total) bytes that device ``dev`` reports (an RPC device asks its worker)."""
    memory = ggml_fn(
        "ggml_backend_dev_memory",
        None,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    )
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    memory(dev, ctypes.byref(free), ctypes.byref(total))
    return free.value, total.value
