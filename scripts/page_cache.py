"""A file's pages in the page cache, for benchmarks that load a model warm and cold (no root).

    from page_cache import make_cold, make_warm, read_all, resident

``make_cold`` drops a file's pages with ``posix_fadvise(POSIX_FADV_DONTNEED)``, which needs no
root but leaves alone pages a process maps; ``make_warm`` reads it whole. Both check the result
with ``resident``: ``mincore`` over a fresh read-only mapping, which faults nothing in, and stop
with the processes that still map the file named when a file stays cached. ``read_all`` times
plain sequential reads: the physical floor of loading the file.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from pathlib import Path

import psutil

__all__ = ["make_cold", "make_warm", "prepare", "read_all", "resident"]

READ_CHUNK = 8 * 2**20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
_libc.mmap.argtypes += [ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def resident(path: Path) -> float:
    """The fraction of ``path``'s pages in the page cache (``mincore`` on a fresh read-only
    mapping, which faults nothing in)."""
    size = path.stat().st_size
    page = mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap {path}")
        try:
            pages = (size + page - 1) // page
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}")
            return sum(b & 1 for b in bytes(vec)) / pages
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def make_cold(path: Path, wait_s: float = 10.0) -> float:
    """Drop the file's pages; its resident fraction after. Mapped pages are not dropped, so
    a process still mapping it (an evicted runner still exiting) is waited for first."""
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)  # (dirty pages are not dropped)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        frac = resident(path)
        if frac <= 0.01 or time.monotonic() > deadline or not _mapped_by(path):
            break
        time.sleep(0.1)
    if frac > 0.01:
        raise RuntimeError(
            f"{path}: {frac:.1%} still cached after POSIX_FADV_DONTNEED; mapped by"
            f" {_mapped_by(path) or 'no process'}"
        )
    return frac


def _mapped_by(path: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(m.path == str(path) for m in proc.memory_maps()):
                found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])[:80]}")
        except psutil.Error:
            continue
    return found


def read_all(path: Path) -> float:
    """Seconds to read the whole file with plain reads."""
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    t0 = time.perf_counter()
    with path.open("rb", buffering=0) as f:
        while f.readinto(view):
            pass
    return time.perf_counter() - t0


def make_warm(path: Path) -> float:
    read_all(path)
    frac = resident(path)
    if frac < 0.99:
        raise RuntimeError(f"{path}: only {frac:.1%} cached after reading it whole")
    return frac


def prepare(path: Path, cache: str) -> float:
    return make_cold(path) if cache == "cold" else make_warm(path)
