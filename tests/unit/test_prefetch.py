"""The runner's read-ahead of a model file: only a file the page cache lacks is read, and a
read file is in the page cache afterwards. What is cached is checked with ``mincore`` over a
fresh mapping, as the runner probes, which starts no I/O (a ``RWF_NOWAIT`` read that misses
starts the kernel's readahead there, 8 MiB on these disks, and warmed the cold file)."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import time
from pathlib import Path

import pytest

from runner.prefetch import Prefetcher, _libc

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or not hasattr(os, "posix_fadvise"),
    reason="needs Linux's mincore and posix_fadvise",
)


def _file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())  # (dirty pages cannot be dropped)
    return path


def _cached(path: Path) -> float:
    """The fraction of the file's pages in the page cache."""
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    libc = _libc()  # (the runner's own bindings)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vec = (ctypes.c_ubyte * pages)()
            assert libc.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
            return sum(b & 1 for b in bytes(vec)) / pages
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def _drop(path: Path) -> bool:
    """Drop the file's pages; whether the filesystem let them go (tmpfs does not). Pages just
    written may sit in a per-CPU batch that the kernel drains a little later: a few tries."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(20):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if _cached(path) == 0.0:
                return True
            time.sleep(0.05)
        return False
    finally:
        os.close(fd)


@pytest.fixture
def cold(tmp_path: Path) -> Path:
    path = _file(tmp_path / "model.gguf", 24 << 20)
    if not _drop(path):
        pytest.skip(f"the page cache keeps {tmp_path}'s pages (tmpfs?)")
    return path


def test_a_cold_file_is_read_into_the_page_cache(cold: Path) -> None:
    assert _cached(cold) == 0.0
    prefetch = Prefetcher([str(cold)])
    assert prefetch.start()
    prefetch.wait()
    assert _cached(cold) > 0.95  # (the kernel may let a few pages go at once)


def test_a_warm_file_is_not_read_again(tmp_path: Path) -> None:
    warm = _file(tmp_path / "model.gguf", 4 << 20)
    assert _cached(warm) == 1.0  # (just written)
    prefetch = Prefetcher([str(warm)])
    assert not prefetch.start()
    prefetch.stop()


def test_only_the_cold_one_of_several_files_is_read(cold: Path, tmp_path: Path) -> None:
    warm = _file(tmp_path / "mmproj.gguf", 1 << 20)
    prefetch = Prefetcher([str(warm), "", str(cold)])
    assert prefetch.start()
    prefetch.wait()
    assert _cached(cold) > 0.95  # (the kernel may let a few pages go at once)


def test_a_missing_file_starts_nothing(tmp_path: Path) -> None:
    prefetch = Prefetcher([str(tmp_path / "absent.gguf"), ""])
    assert not prefetch.start()
    prefetch.stop()
