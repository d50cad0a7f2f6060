"""The runner's read-ahead of a model file: only a file the page cache lacks is read, and a
read file is in the page cache afterwards (probed with ``RWF_NOWAIT``, which never reads)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runner.prefetch import Prefetcher, is_resident

pytestmark = pytest.mark.skipif(
    not hasattr(os, "RWF_NOWAIT") or not hasattr(os, "posix_fadvise"),
    reason="needs Linux's RWF_NOWAIT and posix_fadvise",
)


def _file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())  # (dirty pages cannot be dropped)
    return path


def _drop(path: Path) -> bool:
    """Drop the file's pages; whether the filesystem let them go (tmpfs does not). Pages just
    written may sit in a per-CPU batch that the kernel drains a little later: a few tries."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(20):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if is_resident(fd, os.fstat(fd).st_size) is False:
                return True
            time.sleep(0.05)
        return False
    finally:
        os.close(fd)


def _resident(path: Path) -> bool | None:
    fd = os.open(path, os.O_RDONLY)
    try:
        return is_resident(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


@pytest.fixture
def cold(tmp_path: Path) -> Path:
    path = _file(tmp_path / "model.gguf", 24 << 20)
    if not _drop(path):
        pytest.skip(f"the page cache keeps {tmp_path}'s pages (tmpfs?)")
    return path


def test_a_cold_file_is_read_into_the_page_cache(cold: Path) -> None:
    assert _resident(cold) is False
    prefetch = Prefetcher([str(cold)])
    assert prefetch.start()
    prefetch.wait()
    assert _resident(cold) is True


def test_a_warm_file_is_not_read_again(tmp_path: Path) -> None:
    warm = _file(tmp_path / "model.gguf", 4 << 20)
    assert _resident(warm) is True  # (just written)
    prefetch = Prefetcher([str(warm)])
    assert not prefetch.start()
    prefetch.stop()


def test_only_the_cold_one_of_several_files_is_read(cold: Path, tmp_path: Path) -> None:
    warm = _file(tmp_path / "mmproj.gguf", 1 << 20)
    prefetch = Prefetcher([str(warm), "", str(cold)])
    assert prefetch.start()
    prefetch.wait()
    assert _resident(cold) is True


def test_a_missing_file_starts_nothing(tmp_path: Path) -> None:
    prefetch = Prefetcher([str(tmp_path / "absent.gguf"), ""])
    assert not prefetch.start()
    prefetch.stop()
