"""A ggml device that offers at most a cap of memory: what ``power rpc-worker --mem`` serves.

llama.cpp's ``rpc-server`` once had ``--mem``, which made the worker answer a fixed figure
when a client asked its memory; the pinned release dropped it, and its server
(``ggml_backend_rpc_start_server``) answers with what the device reports
(``ggml_backend_dev_memory``). So the server is handed a proxy device instead of the real
one: a ``struct ggml_backend_device`` whose interface is a copy of the real device's (same
``reg`` and ``context``, so every other callback works as on the real one) except two entries:

- ``get_memory`` reports ``free = min(cap, real free)`` and ``total = cap``. The client places
  layers by ``free`` (``runner.rpc`` and llama.cpp's own split alike); ``total`` is only shown,
  and would matter only if both were 0.
- ``init_backend`` creates the real backend and points its ``device`` at the proxy, because
  the server answers a memory request from the backend's device (``ggml_backend_get_device``),
  which the real backend would name as the real device.

The layouts are those of ``ggml/src/ggml-backend-impl.h`` in the ggml that llama-cpp-python
0.3.36 vendors; they are not public API, so each one this module relies on is checked against
ggml's own accessors before the server gets the proxy, and a mismatch is a
``CappedDeviceError`` instead of a crash. The proxy and its callbacks must outlive the server
(which never returns): ``CappedDevice`` holds them.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

from runner.ggml_api import device_memory, ggml_fn

__all__ = ["CappedDevice", "CappedDeviceError"]

# struct ggml_backend_device_i: 15 function pointers, in this order.
_DEVICE_IFACE = (
    "get_name",
    "get_description",
    "get_memory",
    "get_type",
    "get_props",
    "init_backend",
    "get_buffer_type",
    "get_host_buffer_type",
    "buffer_from_host_ptr",
    "supports_op",
    "supports_buft",
    "offload_op",
    "event_new",
    "event_free",
    "event_synchronize",
)
# struct ggml_backend { ggml_guid_t guid; struct ggml_backend_i iface (16 function pointers);
# ggml_backend_dev_t device; void * context; }
_BACKEND_DEVICE_OFFSET = ctypes.sizeof(ctypes.c_void_p) * (1 + 16)

_GetMemory = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)
)
_InitBackend = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)


class _DeviceIface(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in _DEVICE_IFACE]


class _Device(ctypes.Structure):
    _fields_ = [("iface", _DeviceIface), ("reg", ctypes.c_void_p), ("context", ctypes.c_void_p)]


class CappedDeviceError(RuntimeError):
    """This ggml's device or backend layout is not the one this module was written for."""


@dataclass(eq=False)
class CappedDevice:
    """A proxy of the ggml device ``real`` that offers at most ``cap`` bytes.

    ``handle`` is the ``ggml_backend_dev_t`` to give the server; keep this object alive for
    as long as the server runs (it owns the proxy struct and the callbacks in it).
    """

    real: int
    cap: int
    _struct: _Device = field(init=False, repr=False)
    _callbacks: tuple[object, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.cap <= 0:
            raise ValueError(f"a memory cap must be positive, not {self.cap}")
        original = _Device.from_address(self.real)
        if not original.iface.get_memory or not original.iface.init_backend:
            raise CappedDeviceError("the device has no get_memory or init_backend")
        real_memory = _GetMemory(original.iface.get_memory)
        real_init = _InitBackend(original.iface.init_backend)
        real, cap = self.real, self.cap

        _check_backend(real_init(real, None), real)

        def get_memory(_dev: int, free: Any, total: Any) -> None:
            real_memory(real, free, total)
            free.contents.value = min(cap, free.contents.value)
            total.contents.value = cap

        def init_backend(_dev: int, params: bytes | None) -> int | None:
            backend: int | None = real_init(real, params)
            if backend:
                ctypes.c_void_p.from_address(backend + _BACKEND_DEVICE_OFFSET).value = self.handle
            return backend

        callbacks = (_GetMemory(get_memory), _InitBackend(init_backend))
        proxy = _Device()
        ctypes.memmove(ctypes.addressof(proxy), self.real, ctypes.sizeof(_Device))
        proxy.iface.get_memory = ctypes.cast(callbacks[0], ctypes.c_void_p).value
        proxy.iface.init_backend = ctypes.cast(callbacks[1], ctypes.c_void_p).value
        self._struct, self._callbacks = proxy, callbacks
        _check_copy(self.real, self.handle)
        if self.memory()[1] != cap:
            raise CappedDeviceError("ggml_backend_dev_memory does not call the copied get_memory")

    @property
    def handle(self) -> int:
        """The proxy's ``ggml_backend_dev_t``."""
        return ctypes.addressof(self._struct)

    def memory(self) -> tuple[int, int]:
        """(free, total) as the proxy reports them."""
        return device_memory(self.handle)


def _check_copy(real: int, proxy: int) -> None:
    """The proxy answers ggml's accessors as the real device does (name, type, registry)."""
    for accessor, restype in (
        ("ggml_backend_dev_name", ctypes.c_char_p),
        ("ggml_backend_dev_type", ctypes.c_int),
        ("ggml_backend_dev_backend_reg", ctypes.c_void_p),
    ):
        fn = ggml_fn(accessor, restype, ctypes.c_void_p)
        if fn(proxy) != fn(real):
            raise CappedDeviceError(f"{accessor} differs on the copied device")


def _check_backend(backend: int | None, real: int) -> None:
    """A backend of the real device (then freed) holds it where ``init_backend`` will write."""
    if not backend:
        raise CappedDeviceError("the device creates no backend")
    get_device = ggml_fn("ggml_backend_get_device", ctypes.c_void_p, ctypes.c_void_p)
    try:
        slot = ctypes.c_void_p.from_address(backend + _BACKEND_DEVICE_OFFSET)
        if get_device(backend) != real or slot.value != real:
            raise CappedDeviceError("the backend's device field is not where it was expected")
    finally:
        ggml_fn("ggml_backend_free", None, ctypes.c_void_p)(backend)
