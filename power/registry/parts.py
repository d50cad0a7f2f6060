"""One part of a blob download: its plan, its saved state, its ranged GET and its writes.

A part is ``{"N","Offset","Size","Completed"}``, saved as ``<partial>-<N>`` (Ollama's layout).
:func:`fetch_part` streams the part's range into the partial file: chunks are buffered and a
worker thread writes each buffer (``pwritev``, no joining) while the next one fills, so the
network and the disk overlap. ``Completed`` grows only once a write has landed, so saved state
never claims bytes that are not on disk; landed bytes are then fed to the
:class:`PrefixHasher`, which hashes them in a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Protocol

import aiohttp
import msgspec

from power.errors import RegistryError
from power.registry.checksum import PrefixHasher
from power.registry.client import error_text, map_errors

__all__ = ["Part", "Progress", "RangeReader", "fetch_part", "load_parts", "plan_parts"]

log = logging.getLogger(__name__)

MAX_PARTS = 16
PART_MIN = 100 * 1000 * 1000
PART_MAX = 1000 * 1000 * 1000
# Bytes a part buffers before a worker thread writes them: large, because each hand-off to a
# thread costs a loop round trip, but within a budget shared by the parts fetched at once.
WRITE_BUFFER_MIN = 1 << 20
WRITE_BUFFER_MAX = 4 << 20
WRITE_BUDGET = 16 << 20
SAVE_EVERY_S = 0.5
FLUSH_EVERY_S = 0.1  # so progress moves on slow links too
_IOV_MAX = 1024  # buffers per pwritev (Linux's limit); a slow link brings many small chunks


class Part(msgspec.Struct):
    N: int
    Offset: int
    Size: int
    Completed: int = 0


class RangeReader(Protocol):
    """Where a blob's bytes come from: a ranged GET answered 206 (or 200 with everything)."""

    async def get_range(self, start: int, end: int) -> aiohttp.ClientResponse: ...


class Progress(Protocol):
    """What a part reports landed bytes to (the shared transfer)."""

    key: str
    completed: int


class DiskError(RegistryError):
    """Writing the partial file failed; never retried."""


def plan_parts(total: int, part_min: int) -> list[Part]:
    size = min(max(math.ceil(total / MAX_PARTS), part_min), PART_MAX)
    count = max(1, math.ceil(total / size))
    return [Part(N=i, Offset=i * size, Size=min(size, total - i * size)) for i in range(count)]


def write_buffer(parts: int) -> int:
    """The buffer size for each of ``parts`` parts fetched at once."""
    return max(WRITE_BUFFER_MIN, min(WRITE_BUFFER_MAX, WRITE_BUDGET // max(parts, 1)))


def state_path(partial: Path, n: int) -> Path:
    return partial.with_name(f"{partial.name}-{n}")


def load_parts(partial: Path, total: int) -> list[Part] | None:
    """Saved part state that covers exactly ``total`` bytes, else None (start over)."""
    if not partial.is_file():
        return None
    parts = []
    for path in sorted(partial.parent.glob(partial.name + "-*")):
        try:
            parts.append(msgspec.json.decode(path.read_bytes(), type=Part))
        except (OSError, msgspec.DecodeError):
            return None
    parts.sort(key=lambda p: p.Offset)
    offset = 0
    for p in parts:
        if p.Offset != offset or not 0 <= p.Completed <= p.Size:
            return None
        offset += p.Size
    return parts if offset == total and parts else None


def save_part(partial: Path, part: Part) -> None:
    path = state_path(partial, part.N)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(msgspec.json.encode(part))
    os.replace(tmp, path)


def clear_state(partial: Path) -> None:
    for path in partial.parent.glob(partial.name + "-*"):
        path.unlink(missing_ok=True)


def pwritev(fd: int, chunks: list[bytes], pos: int) -> None:
    """Write every byte of ``chunks`` at ``pos``; disk errors become :class:`DiskError`."""
    views = [memoryview(c) for c in chunks if c]
    i = 0  # views[:i] are written
    try:
        while i < len(views):
            n = os.pwritev(fd, views[i : i + _IOV_MAX], pos)
            pos += n
            while i < len(views) and n >= len(views[i]):
                n -= len(views[i])
                i += 1
            if n:  # a short write ended inside views[i]
                views[i] = views[i][n:]
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskError("write blob: no space left on device") from exc
        raise DiskError(f"write blob: {exc.strerror or exc}") from exc


class _Write:
    """One buffer of a part, written by a worker thread."""

    def __init__(self, fd: int, pos: int, chunks: list[bytes]) -> None:
        self.fd, self.pos, self.chunks = fd, pos, chunks
        self.size = sum(map(len, chunks))
        self.written = False
        self.landed = threading.Event()
        self.settled = False

    def run(self) -> None:
        try:
            pwritev(self.fd, self.chunks, self.pos)
            self.written = True
        finally:
            self.landed.set()


class _PartWriter:
    """Buffers a part's incoming chunks; at most one write of them is in flight."""

    def __init__(self, t: Progress, fd: int, part: Part, hasher: PrefixHasher) -> None:
        self.t, self.fd, self.part, self.hasher = t, fd, part, hasher
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.inflight: _Write | None = None
        self.job: asyncio.Future[None] | None = None

    @property
    def received(self) -> int:
        """Bytes of the part on disk, being written or buffered."""
        pending = self.inflight.size if self.inflight is not None else 0
        return self.part.Completed + pending + self.buffered

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.buffered += len(chunk)

    async def flush(self) -> None:
        """Wait for the write in flight, then hand the buffered chunks to a new one."""
        if self.inflight is not None and self.job is not None:
            w = self.inflight
            await asyncio.shield(self.job)  # cancelling us must never cancel a queued write
            # Awaiting a job that is already done does not yield, so its done callback may not
            # have run yet: count it here, or the next write would go to the old position.
            self._settle(w)
        if not self.buffered:
            return
        pos = self.part.Offset + self.part.Completed
        w = _Write(self.fd, pos, self.chunks)
        self.chunks, self.buffered = [], 0
        self.inflight = w
        # Submitted to the executor now, not from a task's first step: abandon() may have to
        # wait for it synchronously before the loop has run anything else.
        self.job = asyncio.get_running_loop().run_in_executor(None, w.run)
        self.job.add_done_callback(lambda job: self._done(w, job))

    async def drain(self) -> None:
        await self.flush()
        await self.flush()  # the write just started

    def _done(self, w: _Write, job: asyncio.Future[None]) -> None:
        if not job.cancelled():
            job.exception()  # retrieved here: flush() re-raises it, unless we were cancelled
        self._settle(w)

    def _settle(self, w: _Write) -> None:
        """Count a landed write once (from its done callback or from :meth:`abandon`)."""
        if w.settled:
            return
        w.settled = True
        if self.inflight is w:
            self.inflight, self.job = None, None
        if w.written:
            self.part.Completed += w.size
            self.t.completed += w.size
            self.hasher.feed(w.pos, w.chunks)

    def abandon(self) -> None:
        """Keep what arrived (dropped connection, cancelled pull): synchronous, so it also runs
        in a task being cancelled. Waits for the write in flight, then writes the rest here."""
        w = self.inflight
        if w is not None:
            w.landed.wait()
            self._settle(w)
            if not w.written:
                return  # the disk failed: keep nothing after the gap
        if self.buffered:
            pos = self.part.Offset + self.part.Completed
            with contextlib.suppress(DiskError):
                pwritev(self.fd, self.chunks, pos)
                self.part.Completed += self.buffered
                self.t.completed += self.buffered
                self.hasher.feed(pos, self.chunks)
            self.chunks, self.buffered = [], 0


async def fetch_part(
    t: Progress,
    reader: RangeReader,
    fd: int,
    partial: Path,
    part: Part,
    hasher: PrefixHasher,
    *,
    buffer: int,
    max_tries: int,
    backoff_s: float,
) -> None:
    """Fetch the rest of ``part``, retrying with backoff; its state is saved however it ends.
    Landed bytes are written ``buffer`` bytes at a time (see :func:`write_buffer`)."""
    tries = 0
    try:
        while part.Completed < part.Size:
            try:
                await _fetch_range(t, reader, fd, partial, part, hasher, buffer)
            except DiskError:
                raise
            except RegistryError as exc:
                tries += 1
                if tries >= max_tries:
                    raise RegistryError(f"max retries exceeded: {exc}") from exc
                delay = backoff_s * 2 ** (tries - 1)
                log.info("part %d of %s failed (%s); retrying in %.1fs", part.N, t.key, exc, delay)
                await asyncio.sleep(delay)
    finally:
        with contextlib.suppress(OSError):
            save_part(partial, part)  # small and synchronous: it must run even when cancelled
            log.debug("saved part %d of %s: %d bytes", part.N, t.key, part.Completed)


async def _fetch_range(
    t: Progress,
    reader: RangeReader,
    fd: int,
    partial: Path,
    part: Part,
    hasher: PrefixHasher,
    buffer: int,
) -> None:
    start = part.Offset + part.Completed
    end = part.Offset + part.Size - 1
    resp = await reader.get_range(start, end)
    async with resp:
        if resp.status not in (200, 206):
            raise RegistryError(f"download {t.key}: {await error_text(resp)}")
        skip = start if resp.status == 200 else 0  # a server that ignores Range
        out = _PartWriter(t, fd, part, hasher)
        saved = flushed = time.monotonic()
        try:
            while (want := part.Size - out.received) > 0:
                with map_errors(f"download {t.key}"):
                    chunk = await resp.content.readany()
                if not chunk:
                    break
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                out.add(chunk if len(chunk) <= want else chunk[:want])
                if out.buffered >= buffer or time.monotonic() - flushed >= FLUSH_EVERY_S:
                    await out.flush()
                    flushed = time.monotonic()
                    if flushed - saved >= SAVE_EVERY_S:
                        await asyncio.to_thread(save_part, partial, part)
                        saved = time.monotonic()
            await out.drain()
        except BaseException:
            out.abandon()
            raise
    if part.Completed < part.Size:
        raise RegistryError(f"download {t.key}: connection closed early")
