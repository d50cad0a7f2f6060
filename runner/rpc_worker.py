"""``python -m runner.rpc_worker HOST PORT THREADS [MEM]``: llama.cpp's own RPC server, in this
process.

``power rpc-worker`` checks its options and replaces itself with this. It serves llama.cpp's
RPC protocol with llama.cpp's server (``ggml_backend_rpc_start_server``, what llama.cpp's
``rpc-server`` tool calls after parsing its arguments), from the RPC-enabled llama-cpp-python
the runner uses: no second build of llama.cpp is needed. It offers this machine's GPUs, or its
CPU when it has none (the ``rpc-server`` rule), and serves one client (one runner) at a time.
With ``MEM`` (bytes), each device offers at most that much (``runner.capped_device``).

The server never returns while it runs, so SIGINT and SIGTERM get their default action (the
process ends; a runner using it then fails). Exit codes: 1 it cannot serve (no RPC backend in
this llama-cpp-python, the address cannot be bound, a device that cannot be capped), 2 bad
arguments or llama-cpp-python unusable.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import sys

from runner.llama_compat import UnsupportedEngineError, check_version, installed_version

__all__ = ["main"]

_USAGE = "usage: python -m runner.rpc_worker HOST PORT THREADS [MEM]\n"


def main(argv: list[str]) -> int:
    if sys.platform.startswith("linux"):  # before llama.cpp's libraries: see runner.stdcxx
        from runner.stdcxx import load_stdcxx_first

        load_stdcxx_first()
    if len(argv) not in (3, 4) or not all(a.isdigit() for a in argv[1:]):
        sys.stderr.write(_USAGE)
        return 2
    host, port, threads = argv[0], int(argv[1]), max(1, int(argv[2]))
    cap = int(argv[3]) if len(argv) == 4 else None
    if cap == 0:
        sys.stderr.write(_USAGE)
        return 2
    try:
        check_version(installed_version())
    except UnsupportedEngineError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 2
    import llama_cpp

    from runner.capped_device import CappedDevice, CappedDeviceError
    from runner.ggml_api import DEVICE_TYPE_CPU, DEVICE_TYPE_GPU, device_memory, ggml_fn
    from runner.rpc import RPC_INSTALL

    llama_cpp.llama_backend_init()
    reg = ggml_fn("ggml_backend_reg_by_name", ctypes.c_void_p, ctypes.c_char_p)(b"RPC")
    proc = ggml_fn(
        "ggml_backend_reg_get_proc_address", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p
    )
    address = proc(reg, b"ggml_backend_rpc_start_server") if reg else None
    if not address:
        sys.stderr.write(
            "Error: this llama-cpp-python was built without llama.cpp's RPC backend; install"
            f" one built with it: {RPC_INSTALL}\n"
        )
        return 1
    start = ctypes.CFUNCTYPE(
        None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p
    )(address)
    count = ggml_fn("ggml_backend_dev_count", ctypes.c_size_t)
    get = ggml_fn("ggml_backend_dev_get", ctypes.c_void_p, ctypes.c_size_t)
    dev_type = ggml_fn("ggml_backend_dev_type", ctypes.c_int, ctypes.c_void_p)
    local = [dev for i in range(count()) if (dev := get(i))]
    devices = [d for d in local if dev_type(d) == DEVICE_TYPE_GPU]
    devices = devices or [d for d in local if dev_type(d) == DEVICE_TYPE_CPU][:1]
    try:  # llama.cpp says only "Failed to create server socket"; this names why
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        sys.stderr.write(f"Error: cannot listen on {host}:{port}: {exc.strerror or exc}\n")
        return 1
    capped: list[CappedDevice] = []  # the proxies outlive the server: they are in its hands
    if cap is not None:
        try:
            capped = [CappedDevice(d, cap) for d in devices]
        except CappedDeviceError as exc:
            sys.stderr.write(f"Error: cannot cap this llama.cpp's device memory: {exc}\n")
            return 1
        devices = [c.handle for c in capped]
    free = sum(device_memory(d)[0] for d in devices)
    limit = f" (at most {cap >> 20} MiB each)" if cap is not None else ""
    sys.stderr.write(
        f"llama.cpp RPC worker on {host}:{port}: {len(devices)} device(s),"
        f" {free >> 20} MiB free{limit}, {threads} threads\n"
    )
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    array = (ctypes.c_void_p * len(devices))(*devices)
    start(f"{host}:{port}".encode(), None, threads, len(devices), array)
    sys.stderr.write(f"Error: llama.cpp's RPC server on {host}:{port} stopped\n")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
