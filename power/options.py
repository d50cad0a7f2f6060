"""Ollama's ``options``: defaults < the model's PARAMETERs < the request, split by where they act.

Load-time options become ``LoadParams`` (changing them may need another runner); sampling
options become ``Sampling`` and the per-request generation limits. Unknown keys are ignored with
a warning, and the options Ollama dropped but old clients still send are accepted silently. A
value of the wrong type, or out of range (integers are 32-bit, floats finite C floats), is a 400
naming the option. ``num_thread`` beyond the usable CPUs is clamped to them; memory-sized options
(``num_ctx``, ``num_batch``) are checked against the machine when the model is placed.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

from power.errors import InvalidRequestError
from proto import LoadParams, Sampling

if TYPE_CHECKING:
    from power.settings import Settings

__all__ = ["DEFAULT_NUM_BATCH", "MAX_STOP", "Resolved", "check_options", "resolve_options"]

log = logging.getLogger(__name__)

_INT, _FLOAT, _BOOL = "int", "float", "bool"
DEFAULT_NUM_BATCH = 512
MAX_STOP = 1_024  # stop strings a request may give: each is matched against every token

_SAMPLING: dict[str, str] = {
    "temperature": _FLOAT,
    "top_k": _INT,
    "top_p": _FLOAT,
    "min_p": _FLOAT,
    "typical_p": _FLOAT,
    "repeat_penalty": _FLOAT,
    "repeat_last_n": _INT,
    "presence_penalty": _FLOAT,
    "frequency_penalty": _FLOAT,
    "seed": _INT,
}
_REQUEST: dict[str, str] = {"num_predict": _INT, "num_keep": _INT}
_LOAD: dict[str, str] = {
    "num_ctx": _INT,
    "num_batch": _INT,
    "num_gpu": _INT,
    "main_gpu": _INT,
    "num_thread": _INT,
    "use_mmap": _BOOL,
    "use_mlock": _BOOL,
}
_OBSOLETE = frozenset(
    {
        "numa",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "embedding_only",
        "tfs_z",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "penalize_newline",
        "num_gqa",
        "rope_frequency_base",
        "rope_frequency_scale",
        "num_thread_batch",
        "draft_num_predict",
    }
)


# Integer options reach llama.cpp as 32-bit ints; the seed is masked to 32 bits by the runner.
_INT32 = (-(2**31), 2**31 - 1)
_INT_RANGES: dict[str, tuple[int, int]] = {"seed": (-(2**63), 2**63 - 1)}
_FLOAT32_MAX = 3.4028234663852886e38  # sampling options are C floats


@dataclass(frozen=True, slots=True)
class Resolved:
    load: LoadParams
    sampling: Sampling
    num_predict: int
    num_keep: int
    stop: tuple[str, ...]


def _coerce(name: str, kind: str, value: Any) -> Any:
    if kind == _BOOL:
        if isinstance(value, bool):
            return value
    elif kind == _INT:
        if isinstance(value, bool):
            pass
        elif isinstance(value, int | float):
            low, high = _INT_RANGES.get(name, _INT32)
            if not low <= value <= high:  # NaN fails too
                raise InvalidRequestError(
                    f'option "{name}" is out of range: {value!r} (must be between {low} and {high})'
                )
            return int(value)  # JSON numbers truncate, as in Ollama
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not -_FLOAT32_MAX <= value <= _FLOAT32_MAX:  # NaN fails too
            raise InvalidRequestError(f'option "{name}" is out of range: {value!r}')
        return float(value)
    expected = {"int": "integer", "float": "number", "bool": "boolean"}[kind]
    raise InvalidRequestError(f'option "{name}" must be of type {expected}')


def _stop(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):  # a Modelfile PARAMETER may store one stop string
        return (value,)
    if isinstance(value, list) and len(value) > MAX_STOP:
        raise InvalidRequestError(f'option "stop" holds more than {MAX_STOP} strings')
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InvalidRequestError('option "stop" must be of type array')


@functools.cache
def usable_cpus() -> int:
    """Logical CPUs this process may run on: more threads than these only contend."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _threads(requested: int) -> int:
    """``num_thread`` as the runner gets it: 0 or less is the default, more than the machine
    can run is clamped to what it can (100000 threads crash llama.cpp)."""
    usable = usable_cpus()
    if requested <= 0:
        return min(default_threads(), usable)
    if requested > usable:
        log.info("num_thread %d clamped to the %d usable CPUs", requested, usable)
    return min(requested, usable)


@functools.cache
def default_threads() -> int:
    """Threads when neither the request nor the settings say: the physical cores.

    Resolved here, not in the runner, so a request that names the same count explicitly is
    served by the loaded runner instead of reloading it.
    """
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def merge_options(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer:
            merged.update({k: v for k, v in layer.items() if v is not None})
    return merged


def check_options(options: Mapping[str, Any]) -> None:
    """Raise InvalidRequestError for a known option of the wrong type (a create's ``parameters``).

    Unknown and obsolete names pass: requests ignore them with a warning, as Ollama does.
    """
    for name, value in merge_options(options).items():
        kind = _SAMPLING.get(name) or _REQUEST.get(name) or _LOAD.get(name)
        if kind is not None:
            _coerce(name, kind, value)
        elif name == "stop":
            _stop(value)


def resolve_options(
    settings: Settings,
    *,
    model_path: str,
    model_params: Mapping[str, Any] | None,
    request: Mapping[str, Any] | None,
    lora_paths: tuple[str, ...] = (),
    projector_path: str = "",
    embedding: bool = False,
) -> Resolved:
    if request is not None and not isinstance(request, Mapping):
        raise InvalidRequestError("options must be an object")
    opts = merge_options(model_params, request)
    sampling: dict[str, Any] = {}
    limits: dict[str, Any] = {"num_predict": -1, "num_keep": 4}
    load: dict[str, Any] = {}
    stop: tuple[str, ...] = ()
    for name, value in opts.items():
        if name in _SAMPLING:
            sampling[name] = _coerce(name, _SAMPLING[name], value)
        elif name in _REQUEST:
            limits[name] = _coerce(name, _REQUEST[name], value)
        elif name in _LOAD:
            load[name] = _coerce(name, _LOAD[name], value)
        elif name == "stop":
            stop = _stop(value)
        elif name not in _OBSOLETE:
            log.warning("invalid option provided: %s", name)
    num_ctx = load.get("num_ctx", settings.default_num_ctx)
    params = LoadParams(
        model_path=model_path,
        n_ctx=max(4, num_ctx),
        n_batch=max(1, load.get("num_batch", DEFAULT_NUM_BATCH)),
        n_gpu_layers=load.get("num_gpu", settings.num_gpu),
        main_gpu=load.get("main_gpu", settings.main_gpu),
        n_threads=_threads(load.get("num_thread", settings.runner_threads)),
        use_mmap=load.get("use_mmap", True),
        use_mlock=load.get("use_mlock", settings.use_mlock),
        flash_attn=settings.flash_attention,
        kv_cache_type=settings.kv_cache_type,
        lora_paths=lora_paths,
        projector_path=projector_path,
        embedding=embedding,
        num_parallel=max(1, settings.num_parallel),
        rpc_workers=tuple(settings.rpc_workers),
    )
    return Resolved(
        load=params,
        sampling=Sampling(**sampling),
        num_predict=limits["num_predict"],
        num_keep=limits["num_keep"],
        stop=stop,
    )
