"""Reads a model's files into the page cache while llama.cpp maps and loads them.

A cold ``mmap`` load leaves the pages to llama.cpp's ``MADV_WILLNEED`` and to page faults: on
the machines measured it ran either at the disk's sequential rate or at a third of it, and the
first decode after it often still faulted in weights. One thread reading the file front to back
in large blocks, beside the load, keeps the disk streaming at its sequential rate; the load and
the first decode then find the pages there (docs/performance.md, "Model swap").

A file already in the page cache is left alone (``mincore`` probes say so without reading it),
and so is one larger than the memory available, which reading would only churn.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import mmap
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

import psutil

__all__ = ["Prefetcher", "is_resident"]

log = logging.getLogger(__name__)

BLOCK = 8 << 20
PROBES = 32  # pages probed, spread over the file
_PAGE = 4096


def is_resident(fd: int, size: int) -> bool | None:
    """Whether every probed page of the open file is in the page cache; None where the
    platform cannot tell. ``mincore`` over a read-only mapping starts no I/O (a ``RWF_NOWAIT``
    read that misses starts the kernel's readahead there, which warmed whole files here)."""
    if size <= 0:
        return True
    libc = _libc()
    if libc is None:
        return None
    addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        return None
    try:
        vec = ctypes.c_ubyte()
        step = max(size // PROBES, _PAGE) // _PAGE * _PAGE
        for offset in range(0, size, step):
            if libc.mincore(addr + offset, 1, ctypes.byref(vec)) != 0:
                return None
            if not vec.value & 1:
                return False
        return True
    finally:
        libc.munmap(addr, size)


@functools.cache
def _libc() -> Any:
    """libc's mmap, munmap and mincore; None where there is no mincore."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]  # fmt: skip
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


class Prefetcher:
    """Reads ``paths`` (those not already cached) on one background thread; ``stop`` ends it."""

    def __init__(self, paths: Iterable[str]) -> None:
        self._paths = [p for p in paths if p]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Start reading if any file needs it; whether a thread was started."""
        todo = [p for p in self._paths if self._wanted(p)]
        if not todo:
            return False
        self._thread = threading.Thread(
            target=self._run, args=(todo,), name="prefetch", daemon=True
        )
        self._thread.start()
        return True

    def wait(self) -> None:
        """Until the files are read (or the reading stopped)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def stop(self) -> None:
        """End the reading after the block in hand."""
        self._stop.set()
        self.wait()

    @staticmethod
    def _wanted(path: str) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False  # (llama.cpp reports the file itself)
        try:
            size = os.fstat(fd).st_size
            if size > psutil.virtual_memory().available:
                return False
            return is_resident(fd, size) is not True
        finally:
            os.close(fd)

    def _run(self, paths: list[str]) -> None:
        buf = bytearray(BLOCK)
        for path in paths:
            start, done = time.perf_counter(), 0
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                while not self._stop.is_set():
                    n = os.readv(fd, [buf])
                    if n <= 0:
                        break
                    done += n
            except OSError as exc:
                log.warning("reading %s ahead of the load failed: %s", path, exc)
            finally:
                os.close(fd)
            log.info(
                "read %s ahead: %.0f MB in %.2f s",
                os.path.basename(path),
                done / 1e6,
                time.perf_counter() - start,
            )
            if self._stop.is_set():
                return
