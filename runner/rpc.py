"""A model's layers split over llama.cpp RPC workers and this machine, by reported memory.

``LoadParams.rpc_workers`` lists llama.cpp ``rpc-server`` endpoints (``power rpc-worker``).
Each worker's devices join the model's device list (``llama_model_params.devices``, ahead of
this machine's GPUs, as llama.cpp orders them, so fewer activations cross the network), and
the layers are shared out in proportion to the free memory each device reports
(``ggml_backend_dev_memory``; a worker answers for its own): ``tensor_split`` among the
devices, and the remainder, in proportion to this machine's free RAM as ggml's CPU device
reports it, stays on the CPU (``n_gpu_layers`` counts the layers on devices).

The RPC backend exists only in a llama-cpp-python built with ``GGML_RPC=ON``; without it a
load is refused with the command that installs one. llama.cpp aborts the whole process when
it cannot connect to a worker, so each worker is first reached with a plain TCP connect, and
one that does not answer is a load error naming it. A worker serves one client at a time and
leaves the others' connections in its listen queue, where llama.cpp would wait for its answer
without end: one that has not answered within ``ANSWER_TIMEOUT_S`` is a load error saying so
(the runner then exits, and its blocked thread with it). A worker that dies later takes the
runner with it (llama.cpp aborts on a failed RPC call): the gateway sees a crash, whose message
ends with the runner's last stderr lines. So that those are llama.cpp's reason ("Remote RPC
server crashed or returned malformed response") and not the native backtrace ggml would print
after it by attaching gdb (dozens of lines), a runner with workers sets ``GGML_NO_BACKTRACE``;
the Python stacks still follow (``faulthandler``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import threading
from dataclasses import dataclass

import llama_cpp

from proto import LoadParams
from runner.engine import EngineError
from runner.ggml_api import (
    DEVICE_TYPE_CPU,
    DEVICE_TYPE_GPU,
    GgufError,
    block_count,
    device_memory,
    ggml_fn,
)
from runner.llama_compat import TESTED_VERSIONS, set_fields

__all__ = ["RPC_INSTALL", "RpcSplit", "split_over_workers"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
ANSWER_TIMEOUT_S = 10.0  # (its devices and memory: a few round trips)
RPC_INSTALL = (
    f'CMAKE_ARGS="-DGGML_RPC=ON" pip install --force-reinstall --no-cache-dir'
    f" --no-binary llama-cpp-python llama-cpp-python=={TESTED_VERSIONS[-1]}"
)
_MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Device:
    name: str  # e.g. "RPC0[10.0.0.2:50052]" or "CUDA0"
    handle: int  # ggml_backend_dev_t
    free: int  # bytes it reports free


@dataclass(frozen=True, slots=True)
class RpcSplit:
    """What ``llama_model_params`` gets: the devices (NULL-terminated array), their shares,
    and how many layers go to them at all (the rest stay on this machine's CPU)."""

    devices: list[Device]
    cpu_free: int
    n_layers: int  # the model's blocks + the output layer
    n_gpu_layers: int

    def apply(self, mparams: object) -> list[object]:
        """Write the split into ``mparams``; returns the arrays it points at (keep them)."""
        n_max = llama_cpp.llama_max_devices()
        if len(self.devices) > n_max:
            raise EngineError(f"{len(self.devices)} devices, llama.cpp takes at most {n_max}")
        handles = (ctypes.c_void_p * (len(self.devices) + 1))(
            *(d.handle for d in self.devices), None
        )
        shares = [float(d.free) for d in self.devices] + [0.0] * (n_max - len(self.devices))
        tensor_split = (ctypes.c_float * n_max)(*shares)
        set_fields(
            mparams,  # type: ignore[arg-type]
            devices=ctypes.cast(handles, ctypes.c_void_p),
            tensor_split=tensor_split,
            n_gpu_layers=self.n_gpu_layers,
            split_mode=llama_cpp.LLAMA_SPLIT_MODE_LAYER,
        )
        return [handles, tensor_split]

    def describe(self) -> str:
        parts = [f"CPU {self.cpu_free / _MIB:.0f} MiB free"]
        parts += [f"{d.name} {d.free / _MIB:.0f} MiB free" for d in self.devices]
        return (
            f"{self.n_gpu_layers}/{self.n_layers} layers on devices, split by memory: "
            + ", ".join(parts)
        )


def split_over_workers(params: LoadParams) -> RpcSplit:
    """The split of ``params.model_path`` over ``params.rpc_workers``, this machine's GPUs
    (unless ``n_gpu_layers`` is 0) and its CPU. Call after ``llama_backend_init``."""
    add_server = _add_server_fn()
    os.environ["GGML_NO_BACKTRACE"] = "1"  # (read by ggml when it aborts)
    devices: list[Device] = []
    for worker in params.rpc_workers:
        _reach(worker)
        reg = _add(add_server, worker)
        if not reg:
            raise EngineError(f"RPC worker {worker} reports no devices")
        devices += [_device(dev) for dev in _reg_devices(reg)]
    if params.n_gpu_layers != 0:
        devices += [_device(dev) for dev in _local_devices(DEVICE_TYPE_GPU)]
    cpu = _local_devices(DEVICE_TYPE_CPU)
    cpu_free = device_memory(cpu[0])[0] if cpu else 0
    n_layers = _n_layers(params.model_path) + 1
    on_devices = sum(d.free for d in devices)
    share = on_devices / (on_devices + cpu_free) if on_devices else 0.0
    split = RpcSplit(devices, cpu_free, n_layers, round(n_layers * share))
    log.info("llama.cpp RPC: %s", split.describe())
    return split


def _add_server_fn() -> ctypes._CFunctionType:
    """``ggml_backend_rpc_add_server``, looked up through the RPC backend's registry entry
    (how llama.cpp's own tools reach it); a clear error when the build has no RPC backend."""
    reg_by_name = ggml_fn("ggml_backend_reg_by_name", ctypes.c_void_p, ctypes.c_char_p)
    proc = ggml_fn(
        "ggml_backend_reg_get_proc_address", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p
    )
    reg = reg_by_name(b"RPC")
    address = proc(reg, b"ggml_backend_rpc_add_server") if reg else None
    if not address:
        raise EngineError(
            "rpc_workers are set, but this llama-cpp-python was built without llama.cpp's RPC"
            f" backend; install one built with it: {RPC_INSTALL}"
        )
    return ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(address)


def _add(add_server: ctypes._CFunctionType, worker: str) -> int:
    """``add_server(worker)``, or an error once the worker has kept it waiting too long."""
    reg: list[int] = []
    call = threading.Thread(
        target=lambda: reg.append(add_server(worker.encode())), name="rpc-connect", daemon=True
    )
    call.start()
    call.join(ANSWER_TIMEOUT_S)
    if call.is_alive():
        raise EngineError(
            f"RPC worker {worker} took the connection but did not answer within"
            f" {ANSWER_TIMEOUT_S:.0f} s; a worker serves one client at a time: is another"
            " daemon or llama.cpp client using it?"
        )
    return reg[0] if reg else 0


def _reach(worker: str) -> None:
    host, _, port = worker.partition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot reach RPC worker {worker}: {exc}") from None


def _reg_devices(reg: int) -> list[int]:
    count = ggml_fn("ggml_backend_reg_dev_count", ctypes.c_size_t, ctypes.c_void_p)
    get = ggml_fn("ggml_backend_reg_dev_get", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    return [get(reg, i) for i in range(count(reg))]


def _local_devices(kind: int) -> list[int]:
    """This process's devices of ``kind`` (RPC workers' are never registered globally)."""
    count = ggml_fn("ggml_backend_dev_count", ctypes.c_size_t)
    get = ggml_fn("ggml_backend_dev_get", ctypes.c_void_p, ctypes.c_size_t)
    dev_type = ggml_fn("ggml_backend_dev_type", ctypes.c_int, ctypes.c_void_p)
    return [dev for i in range(count()) if (dev := get(i)) and dev_type(dev) == kind]


def _device(dev: int) -> Device:
    name = ggml_fn("ggml_backend_dev_name", ctypes.c_char_p, ctypes.c_void_p)
    description = ggml_fn("ggml_backend_dev_description", ctypes.c_char_p, ctypes.c_void_p)
    label = (name(dev) or b"?").decode(errors="replace")
    if label.startswith("RPC"):  # its description is the worker's endpoint
        label += f"[{(description(dev) or b'?').decode(errors='replace')}]"
    return Device(label, dev, device_memory(dev)[0])


def _n_layers(path: str) -> int:
    try:
        return block_count(path)
    except GgufError as exc:
        raise EngineError(str(exc)) from None
