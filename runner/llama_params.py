"""``LoadParams`` as llama.cpp's parameter structs, every write through ``set_fields``.

A struct may point at Python-owned objects (the tensor split, the device list of a model split
over RPC workers, the progress callback) that
llama.cpp reads while it loads: ``model_params`` returns them, for the engine to keep alive.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import llama_cpp

from proto import CpuMode, LoadParams
from runner.amx import deny_amx
from runner.engine import EngineError, OnProgress
from runner.llama_compat import set_fields

__all__ = ["context_params", "enter_cpu_mode", "load_mode", "model_params"]

log = logging.getLogger(__name__)

_KV_TYPES = {
    "f32": 0,
    "f16": llama_cpp.GGML_TYPE_F16,
    "bf16": 30,
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
    "q4_0": llama_cpp.GGML_TYPE_Q4_0,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
}
_LOAD_MODES = {  # (use_mmap, use_mlock) -> llama_load_mode
    (True, False): llama_cpp.LLAMA_LOAD_MODE_AUTO,  # mmap where the devices support it
    (True, True): llama_cpp.LLAMA_LOAD_MODE_MMAP_MLOCK,
    (False, True): llama_cpp.LLAMA_LOAD_MODE_MLOCK,
    (False, False): llama_cpp.LLAMA_LOAD_MODE_NONE,
}


def load_mode(*, use_mmap: bool, use_mlock: bool) -> int:
    """Ollama's ``use_mmap``/``use_mlock`` options as llama.cpp's ``load_mode``."""
    return int(_LOAD_MODES[use_mmap, use_mlock])


def enter_cpu_mode(mode: CpuMode) -> CpuMode:
    """Prepare the process for ``mode`` (before the model loads); the mode it can have."""
    if mode != CpuMode.NO_AMX:
        return mode
    why = deny_amx()
    if why:
        log.warning("cannot keep AMX from this runner (%s): loading with plain buffers", why)
        return CpuMode.PLAIN
    return mode


def model_params(
    params: LoadParams, cpu_mode: CpuMode, progress: OnProgress
) -> tuple[Any, list[object]]:
    """``llama_model_params`` for ``params``, and what it points at (keep it while loading)."""
    mparams = llama_cpp.llama_model_default_params()
    callback = _progress_callback(progress)
    keep: list[object] = [callback]
    set_fields(
        mparams,
        n_gpu_layers=params.n_gpu_layers,
        main_gpu=max(0, params.main_gpu),
        split_mode=params.split_mode,
        load_mode=load_mode(use_mmap=params.use_mmap, use_mlock=params.use_mlock),
        use_extra_bufts=cpu_mode != CpuMode.PLAIN,
        progress_callback=callback,
    )
    if params.rpc_workers:  # the split over the workers replaces the gateway's GPU placement
        from runner.rpc import split_over_workers  # (only for a model that has workers)

        keep += split_over_workers(params).apply(mparams)
    elif params.tensor_split:
        n = llama_cpp.llama_max_devices()
        shares = list(params.tensor_split[:n]) + [0.0] * max(0, n - len(params.tensor_split))
        tensor_split = (ctypes.c_float * n)(*shares)
        keep.append(tensor_split)
        set_fields(mparams, tensor_split=tensor_split)
    return mparams, keep


def _progress_callback(progress: OnProgress) -> Any:
    """``progress`` as a ``llama_progress_callback``. It never raises into C: ctypes would
    print the exception and return False, which aborts the load."""

    def report(fraction: float, _user_data: Any) -> bool:
        try:
            return bool(progress(fraction))
        except BaseException:
            log.exception("reporting the load's progress failed")
            return True

    return llama_cpp.llama_progress_callback(report)


def context_params(
    params: LoadParams, *, n_ctx: int, n_par: int, n_batch: int, threads: int
) -> Any:
    """``llama_context_params`` for ``n_par`` sequences of ``n_ctx`` cells each."""
    kv_type = _KV_TYPES.get(params.kv_cache_type.lower())
    if kv_type is None:
        raise EngineError(f"unsupported KV cache type {params.kv_cache_type!r}")
    cparams = llama_cpp.llama_context_default_params()
    set_fields(
        cparams,
        n_ctx=n_ctx * n_par,
        n_batch=n_batch,
        n_ubatch=n_batch,
        n_seq_max=n_par,
        kv_unified=False,
        n_threads=threads,
        n_threads_batch=threads,
        embeddings=params.embedding,
        flash_attn_type=(
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
            if params.flash_attn is None
            else int(params.flash_attn)
        ),
        type_k=kv_type,
        type_v=kv_type,
    )
    return cparams
