"""ggml's backend-device and GGUF C APIs, called through ctypes on llama-cpp-python's libggml.

llama-cpp-python binds llama.cpp's ``llama_*`` functions but not ggml's device registry
(``ggml_backend_dev_*``, ``ggml_backend_reg_*``), which the runner needs to see its GPUs and to
reach llama.cpp's RPC backend, nor ggml's GGUF reader (a model's block count before it loads;
a vocabulary-only llama.cpp load leaves it 0). These are stable C functions of the pinned release
(``runner.llama_compat``); each is bound on first use.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

__all__ = [
    "DEVICE_TYPE_CPU",
    "DEVICE_TYPE_GPU",
    "GgufError",
    "block_count",
    "device_memory",
    "ggml_fn",
]

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


class GgufError(ValueError):
    """A GGUF file ggml cannot read, or without the key asked for."""


class _GgufInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


_GGUF_INTS = {  # gguf_type -> the getter of that type
    2: ("gguf_get_val_u16", ctypes.c_uint16),
    4: ("gguf_get_val_u32", ctypes.c_uint32),
    5: ("gguf_get_val_i32", ctypes.c_int32),
    10: ("gguf_get_val_u64", ctypes.c_uint64),
    11: ("gguf_get_val_i64", ctypes.c_int64),
}
_GGUF_TYPE_STRING = 8


def block_count(path: str) -> int:
    """``<general.architecture>.block_count`` of the GGUF at ``path`` (its header only)."""
    init = ggml_fn("gguf_init_from_file", ctypes.c_void_p, ctypes.c_char_p, _GgufInitParams)
    free = ggml_fn("gguf_free", None, ctypes.c_void_p)
    ctx = init(path.encode(), _GgufInitParams(True, None))
    if not ctx:
        raise GgufError(f"{path} is not a GGUF file ggml can read")
    try:
        arch = _gguf_value(ctx, "general.architecture")
        value = _gguf_value(ctx, f"{arch}.block_count")
        if not isinstance(value, int):
            raise GgufError(f"{path}: {arch}.block_count is not an integer")
        return value
    finally:
        free(ctx)


def _gguf_value(ctx: int, key: str) -> int | str:
    find = ggml_fn("gguf_find_key", ctypes.c_int64, ctypes.c_void_p, ctypes.c_char_p)
    kv_type = ggml_fn("gguf_get_kv_type", ctypes.c_int, ctypes.c_void_p, ctypes.c_int64)
    key_id = find(ctx, key.encode())
    if key_id < 0:
        raise GgufError(f"the model has no {key}")
    kind = kv_type(ctx, key_id)
    if kind == _GGUF_TYPE_STRING:
        get_str = ggml_fn("gguf_get_val_str", ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int64)
        return bytes(get_str(ctx, key_id) or b"").decode(errors="replace")
    if kind not in _GGUF_INTS:
        raise GgufError(f"{key} has GGUF type {kind}, not an integer or a string")
    name, restype = _GGUF_INTS[kind]
    return int(ggml_fn(name, restype, ctypes.c_void_p, ctypes.c_int64)(ctx, key_id))
