"""Blob downloads: parallel ranged parts, resumable, shared between concurrent pulls.

Layout (Ollama's): data goes to ``blobs/sha256-<hex>-partial`` (a sparse file of the full size)
and each part's progress to ``blobs/sha256-<hex>-partial-<N>`` as ``{"N","Offset","Size",
"Completed"}``. A pull that finds them carries on from ``Completed``. When every part is done
the file is hashed; a match is renamed into place, a mismatch deletes the partial data.

:class:`Downloads` keys transfers by digest (or URL): a second pull of the same blob follows the
first transfer's progress instead of starting its own. When the last follower leaves, the
transfer is cancelled and its part state saved for a later resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import logging
import math
import os
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import msgspec

from power.errors import RegistryError
from power.registry.client import error_text, map_errors

__all__ = ["Downloads", "Part", "RangeReader", "Transfer", "download_blob"]

log = logging.getLogger(__name__)

MAX_PARTS = 16
PART_MIN = 100 * 1000 * 1000
PART_MAX = 1000 * 1000 * 1000
MAX_TRIES = 6
READ_CHUNK = 1 << 18
WRITE_BUFFER = 1 << 20
SAVE_EVERY_S = 0.5
FLUSH_EVERY_S = 0.1  # so progress moves on slow links too
_HASH_CHUNK = 1 << 20


class Part(msgspec.Struct):
    N: int
    Offset: int
    Size: int
    Completed: int = 0


class RangeReader(Protocol):
    """Where a blob's bytes come from: a ranged GET answered 206 (or 200 with everything)."""

    async def get_range(self, start: int, end: int) -> aiohttp.ClientResponse: ...


class _DiskError(RegistryError):
    """Writing the partial file failed; never retried."""


class Transfer:
    """One in-flight download that any number of pulls follow."""

    def __init__(self, key: str, total: int) -> None:
        self.key = key
        self.total = total
        self.completed = 0
        self.waiters = 0
        self.task: asyncio.Task[str] | None = None
        # Hashes as bytes land when the blob arrives in one sequential stream (one fresh part).
        self.hasher: hashlib._Hash | None = None


Job = Callable[[Transfer], Coroutine[Any, Any, str]]


class Downloads:
    """The gateway's in-flight transfers, keyed by digest or URL."""

    def __init__(self) -> None:
        self._active: dict[str, Transfer] = {}

    def attach(self, key: str, total: int, job: Job) -> Transfer:
        """Join the running transfer for ``key``, or start ``job`` for it."""
        t = self._active.get(key)
        if t is None or t.task is None or t.task.done() or t.waiters == 0:
            # A transfer with no followers is being cancelled: the new one starts after it has
            # saved its part state, so the two never write the same partial file.
            previous = t.task if t is not None else None
            t = Transfer(key, total)
            t.task = asyncio.ensure_future(_after(previous, job, t))
            t.task.add_done_callback(functools.partial(self._finished, t))
            self._active[key] = t
        else:
            log.info("joining the download already in progress for %s", key)
        t.waiters += 1
        return t

    def _finished(self, t: Transfer, task: asyncio.Task[str]) -> None:
        if self._active.get(t.key) is t:
            del self._active[t.key]
        if not task.cancelled():
            task.exception()  # retrieved here; followers re-raise it

    async def follow(self, t: Transfer, interval_s: float = 0.06) -> AsyncGenerator[int, None]:
        """Yield ``completed`` as it changes until the transfer ends (re-raising its error)."""
        task = t.task
        if task is None:
            raise RuntimeError("transfer was never started")
        try:
            last = -1
            while not task.done():
                if t.completed != last:
                    last = t.completed
                    yield last
                await asyncio.wait({task}, timeout=interval_s)
            if task.cancelled():
                raise RegistryError(f"download of {t.key} was cancelled")
            task.result()
            yield t.completed
        finally:
            t.waiters -= 1
            if t.waiters == 0 and not task.done():
                log.info("every pull of %s left; pausing its download", t.key)
                task.cancel()
                await asyncio.wait({task})


async def _after(previous: asyncio.Task[str] | None, job: Job, t: Transfer) -> str:
    if previous is not None and not previous.done():
        await asyncio.wait({previous})
    return await job(t)


def _plan(total: int, part_min: int) -> list[Part]:
    size = min(max(math.ceil(total / MAX_PARTS), part_min), PART_MAX)
    count = max(1, math.ceil(total / size))
    return [Part(N=i, Offset=i * size, Size=min(size, total - i * size)) for i in range(count)]


def _state_path(partial: Path, n: int) -> Path:
    return partial.with_name(f"{partial.name}-{n}")


def _load_parts(partial: Path, total: int) -> list[Part] | None:
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


def _save(partial: Path, part: Part) -> None:
    path = _state_path(partial, part.N)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(msgspec.json.encode(part))
    os.replace(tmp, path)


def _clear_state(partial: Path) -> None:
    for path in partial.parent.glob(partial.name + "-*"):
        path.unlink(missing_ok=True)


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _pwrite(fd: int, data: bytes, pos: int, hasher: hashlib._Hash | None = None) -> None:
    if hasher is not None:
        hasher.update(data)
    try:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, pos)
            view, pos = view[n:], pos + n
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _DiskError("write blob: no space left on device") from exc
        raise _DiskError(f"write blob: {exc.strerror or exc}") from exc


async def download_blob(
    t: Transfer,
    reader: RangeReader,
    partial: Path,
    final: Callable[[str], Path],
    *,
    expected: str | None,
    part_min: int = PART_MIN,
    max_tries: int = MAX_TRIES,
    backoff_s: float = 1.0,
) -> str:
    """Fetch ``t.total`` bytes into ``partial``, verify, move to ``final(digest)``; the digest."""
    parts = await asyncio.to_thread(_load_parts, partial, t.total)
    if parts is None:
        await asyncio.to_thread(_discard, partial)
        parts = _plan(t.total, part_min)
    t.completed = sum(p.Completed for p in parts)
    t.hasher = hashlib.sha256() if len(parts) == 1 and t.completed == 0 else None
    if t.completed:
        log.info("resuming %s: %d of %d bytes on disk", t.key, t.completed, t.total)
    fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size != t.total:
            os.ftruncate(fd, t.total)
        todo = [p for p in parts if p.Completed < p.Size]
        tasks = [
            asyncio.ensure_future(_fetch_part(t, reader, fd, partial, p, max_tries, backoff_s))
            for p in todo
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
    finally:
        os.close(fd)
    if t.hasher is not None:
        digest = "sha256:" + t.hasher.hexdigest()
    else:
        digest = await asyncio.to_thread(_hash_file, partial)
    if expected is not None and digest != expected:
        await asyncio.to_thread(_discard, partial)
        raise RegistryError(
            f"digest mismatch, file must be downloaded again: want {expected}, got {digest}"
        )
    await asyncio.to_thread(_commit, partial, final(digest))
    return digest


def _discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    _clear_state(partial)


def _commit(partial: Path, target: Path) -> None:
    os.replace(partial, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _clear_state(partial)


async def _fetch_part(
    t: Transfer,
    reader: RangeReader,
    fd: int,
    partial: Path,
    part: Part,
    max_tries: int,
    backoff_s: float,
) -> None:
    tries = 0
    try:
        while part.Completed < part.Size:
            try:
                await _fetch_range(t, reader, fd, partial, part)
            except _DiskError:
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
            _save(partial, part)  # small and synchronous: it must run even when cancelled
            log.debug("saved part %d of %s: %d bytes", part.N, t.key, part.Completed)


async def _fetch_range(
    t: Transfer, reader: RangeReader, fd: int, partial: Path, part: Part
) -> None:
    start = part.Offset + part.Completed
    end = part.Offset + part.Size - 1
    resp = await reader.get_range(start, end)
    async with resp:
        if resp.status not in (200, 206):
            raise RegistryError(f"download {t.key}: {await error_text(resp)}")
        skip = start if resp.status == 200 else 0  # a server that ignores Range
        buf = bytearray()
        saved = flushed = time.monotonic()
        try:
            while part.Completed + len(buf) < part.Size:
                with map_errors(f"download {t.key}"):
                    chunk = await resp.content.read(READ_CHUNK)
                if not chunk:
                    break
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                buf += chunk[: part.Size - part.Completed - len(buf)]
                if len(buf) >= WRITE_BUFFER or time.monotonic() - flushed >= FLUSH_EVERY_S:
                    await _flush(t, fd, part, buf)
                    flushed = time.monotonic()
                    if flushed - saved >= SAVE_EVERY_S:
                        await asyncio.to_thread(_save, partial, part)
                        saved = time.monotonic()
        except BaseException:
            if buf:  # keep what arrived (dropped connection, cancelled pull): at most 1 MiB
                t.hasher = None  # a flush may have been cut short: hash the file at the end
                _pwrite(fd, bytes(buf), part.Offset + part.Completed)
                part.Completed += len(buf)
                t.completed += len(buf)
            raise
        if buf:
            await _flush(t, fd, part, buf)
    if part.Completed < part.Size:
        raise RegistryError(f"download {t.key}: connection closed early")


async def _flush(t: Transfer, fd: int, part: Part, buf: bytearray) -> None:
    """Write ``buf`` at the part's position; it is cleared only once written, so a flush cut
    short by cancellation is redone (same bytes, same offset) by the caller's cleanup."""
    data = bytes(buf)
    await asyncio.to_thread(_pwrite, fd, data, part.Offset + part.Completed, t.hasher)
    buf.clear()
    part.Completed += len(data)
    t.completed += len(data)
