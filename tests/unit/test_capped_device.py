"""``runner.capped_device`` on this machine's real ggml CPU device (no RPC backend needed): the
proxy reports the cap, behaves as the device otherwise, and a backend made through it names
the proxy, which is what llama.cpp's RPC server asks when a client wants a device's memory."""

from __future__ import annotations

import ctypes

import llama_cpp
import pytest

from runner.capped_device import CappedDevice
from runner.ggml_api import DEVICE_TYPE_CPU, device_memory, ggml_fn

MIB = 1 << 20


@pytest.fixture(scope="module")
def cpu() -> int:
    llama_cpp.llama_backend_init()
    count = ggml_fn("ggml_backend_dev_count", ctypes.c_size_t)
    get = ggml_fn("ggml_backend_dev_get", ctypes.c_void_p, ctypes.c_size_t)
    kind = ggml_fn("ggml_backend_dev_type", ctypes.c_int, ctypes.c_void_p)
    dev: int = next(d for i in range(count()) if (d := get(i)) and kind(d) == DEVICE_TYPE_CPU)
    return dev


def test_a_cap_below_what_is_free_is_reported_as_free_and_total(cpu: int) -> None:
    capped = CappedDevice(cpu, 300 * MIB)
    assert capped.memory() == (300 * MIB, 300 * MIB)
    assert device_memory(cpu)[0] > 300 * MIB  # the real device is left as it was


def test_a_cap_above_what_is_free_reports_the_real_free_memory(cpu: int) -> None:
    free, total = device_memory(cpu)
    capped = CappedDevice(cpu, 2 * total)
    assert capped.memory() == (free, 2 * total)


def test_the_proxy_is_the_device_in_every_other_respect(cpu: int) -> None:
    capped = CappedDevice(cpu, 300 * MIB)
    for name, restype in [
        ("ggml_backend_dev_name", ctypes.c_char_p),
        ("ggml_backend_dev_description", ctypes.c_char_p),
        ("ggml_backend_dev_type", ctypes.c_int),
        ("ggml_backend_dev_backend_reg", ctypes.c_void_p),
        ("ggml_backend_dev_buffer_type", ctypes.c_void_p),
    ]:
        fn = ggml_fn(name, restype, ctypes.c_void_p)
        assert fn(capped.handle) == fn(cpu), name


def test_a_backend_made_through_the_proxy_reports_the_cap(cpu: int) -> None:
    capped = CappedDevice(cpu, 300 * MIB)
    init = ggml_fn("ggml_backend_dev_init", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)
    get_device = ggml_fn("ggml_backend_get_device", ctypes.c_void_p, ctypes.c_void_p)
    backend = init(capped.handle, None)
    try:
        assert get_device(backend) == capped.handle
        assert device_memory(get_device(backend)) == (300 * MIB, 300 * MIB)
    finally:
        ggml_fn("ggml_backend_free", None, ctypes.c_void_p)(backend)


@pytest.mark.parametrize("cap", [0, -1])
def test_no_cap_is_not_a_cap(cpu: int, cap: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        CappedDevice(cpu, cap)
