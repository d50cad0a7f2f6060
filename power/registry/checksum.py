"""The sha256 of a blob being downloaded, computed while its parts arrive.

Parts land at their offsets in any order, but sha256 must see the bytes in order. A
:class:`PrefixHasher` keeps one running hash over the region that is on disk contiguously from
byte 0 (the *frontier* is where that region ends, read from the parts' ``Completed``):

* bytes just written where hashing has got to are *fed* to it and hashed from memory; a blob
  fetched as one stream is hashed this way entirely, with no second pass. The backlog of fed
  bytes is bounded: past it, bytes are left on disk for the next case;
* bytes that landed ahead of the frontier (later parts, or a resumed download's saved prefix) are
  read back from the partial file, which the page cache still holds, once the gap before them
  has filled.

One job at a time hashes, in a worker thread of its own (hashlib releases the GIL), so hashing
overlaps both the network and the writes. When the last part lands, what is left to hash is at
most what arrived out of order since the frontier last moved.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
from collections.abc import Sequence
from typing import Protocol

from power.errors import RegistryError

__all__ = ["PrefixHasher"]

READ_BACK_CHUNK = 1 << 20
READ_BACK_JOB = 64 << 20  # per worker-thread job: bounded, so stopping one never waits long
MAX_BACKLOG = 16 << 20  # bytes fed but not hashed yet, held in memory


class _Span(Protocol):
    Offset: int
    Size: int
    Completed: int


class PrefixHasher:
    """sha256 of the partial file's contiguous on-disk prefix; driven from the event loop."""

    def __init__(self, fd: int, parts: Sequence[_Span]) -> None:
        self._fd = fd
        self._parts = sorted(parts, key=lambda p: p.Offset)  # the fetchers' own Part objects
        self._sha = hashlib.sha256()
        self.pos = 0  # bytes hashed
        self._next = 0  # bytes hashed, queued, or being read back
        self._queue: collections.deque[bytes] = collections.deque()  # fed, not yet hashed
        self._queued = 0
        self._job: asyncio.Future[int] | None = None
        self._draining = False  # the job hashes the queue (else it reads back)
        self._stopping = False
        self._error: BaseException | None = None

    def frontier(self) -> int:
        """Where the region written contiguously from byte 0 ends."""
        end = 0
        for p in self._parts:
            end = p.Offset + p.Completed
            if p.Completed < p.Size:
                break
        return end

    def feed(self, pos: int, chunks: list[bytes]) -> None:
        """``chunks`` were just written at ``pos``: hash them from memory if they come next."""
        size = sum(map(len, chunks))
        if pos == self._next and self._queued + size <= MAX_BACKLOG and not self._stopping:
            self._queue.extend(chunks)
            self._queued += size
            self._next += size
        self.kick()

    def kick(self) -> None:
        """Start hashing the queue, or reading back what lies between hashed and frontier."""
        if self._job is not None or self._stopping or self._error is not None:
            return
        if self._queue:
            self._draining = True
            self._job = asyncio.get_running_loop().run_in_executor(None, self._drain)
        else:
            end = min(self.frontier(), self.pos + READ_BACK_JOB)
            if end <= self.pos:
                return
            self._draining = False
            self._next = end
            loop = asyncio.get_running_loop()
            self._job = loop.run_in_executor(None, self._read_back, self.pos, end)
        self._job.add_done_callback(self._job_done)

    def _job_done(self, job: asyncio.Future[int]) -> None:
        self._job = None
        if job.cancelled():
            return
        if (exc := job.exception()) is not None:
            self._error = exc
            return
        hashed = job.result()
        self.pos += hashed
        if self._draining:
            self._queued -= hashed
        self.kick()

    def _drain(self) -> int:
        hashed = 0
        while self._queue and not self._stopping:
            chunk = self._queue.popleft()  # the loop appends meanwhile: deque is thread-safe
            self._sha.update(chunk)
            hashed += len(chunk)
        return hashed

    def _read_back(self, start: int, end: int) -> int:
        buf = bytearray(min(READ_BACK_CHUNK, end - start))
        view = memoryview(buf)
        pos = start
        while pos < end and not self._stopping:
            want = min(len(buf), end - pos)
            try:
                n = os.preadv(self._fd, [view[:want]], pos)
            except OSError as exc:
                raise RegistryError(f"read blob: {exc.strerror or exc}") from exc
            if n <= 0:
                raise RegistryError("read blob: the partial file is shorter than its parts say")
            self._sha.update(view[:n])
            pos += n
        return pos - start

    async def finish(self, total: int) -> str:
        """Hash what is left once every part has landed; ``sha256:<hex>`` of ``total`` bytes."""
        while self.pos < total:
            if self._error is not None:
                raise self._error
            self.kick()
            if self._job is None:
                raise RegistryError(f"hash blob: only {self.frontier()} of {total} bytes on disk")
            await asyncio.wait({self._job})
        return "sha256:" + self._sha.hexdigest()

    async def aclose(self) -> None:
        """Stop reading back and wait for the job in flight, so no thread touches the file."""
        self._stopping = True
        if self._job is not None:
            await asyncio.wait({self._job})
