"""Blob downloads: parallel ranged parts, resumable, shared between concurrent pulls.

Layout (Ollama's): data goes to ``blobs/sha256-<hex>-partial`` (a sparse file of the full size)
and each part's progress to ``blobs/sha256-<hex>-partial-<N>`` as ``{"N","Offset","Size",
"Completed"}``. A pull that finds them carries on from ``Completed``.

Each part's bytes are buffered and written by a worker thread while the next buffer fills, and
``Completed`` counts only bytes that are on disk. A :class:`~power.registry.checksum.PrefixHasher`
hashes the file while it arrives, so when the last part lands the digest is (nearly) known: a
match is renamed into place, a mismatch deletes the partial data. The rename does not wait for
the bytes to reach the disk; :mod:`power.store.writeback` explains why that is safe, and
:class:`Downloads` runs the fsync that follows.

:class:`Downloads` keys transfers by digest (or URL): a second pull of the same blob follows the
first transfer's progress instead of starting its own. When the last follower leaves, the
transfer is cancelled and its part state saved for a later resume. It also owns the fsyncs of
committed blobs: a pull starts them when it ends (:meth:`Downloads.sync_committed`), not while it
runs, because on ext4 (``data=ordered``) every later fsync, the pull's own manifest included,
would otherwise wait for a blob's writeback. :meth:`Downloads.aclose` waits for them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncGenerator, Callable, Coroutine
from pathlib import Path
from typing import Any

from power.errors import RegistryError
from power.registry.checksum import PrefixHasher
from power.registry.parts import (
    PART_MIN,
    Part,
    RangeReader,
    clear_state,
    fetch_part,
    load_parts,
    plan_parts,
    write_buffer,
)
from power.store.writeback import fsync_dir, mark_unsynced, sync_blob

__all__ = ["Downloads", "Part", "RangeReader", "Transfer", "download_blob"]

log = logging.getLogger(__name__)

MAX_TRIES = 6


class Transfer:
    """One in-flight download that any number of pulls follow."""

    def __init__(self, key: str, total: int) -> None:
        self.key = key
        self.total = total
        self.completed = 0
        self.waiters = 0
        self.task: asyncio.Task[str] | None = None
        self.partial: Path | None = None  # where its bytes go while it runs
        self.committed: Path | None = None  # the blob it renamed into place, not yet fsynced


Job = Callable[[Transfer], Coroutine[Any, Any, str]]


class Downloads:
    """The gateway's in-flight transfers, keyed by digest or URL."""

    def __init__(self) -> None:
        self._active: dict[str, Transfer] = {}
        self._unsynced: list[Path] = []
        self._syncs: set[asyncio.Future[None]] = set()

    def attach(self, key: str, total: int, job: Job) -> Transfer:
        """Join the running transfer for ``key``, or start ``job`` for it."""
        t = self._active.get(key)
        if t is None or t.task is None or t.task.done() or t.waiters == 0:
            # A transfer with no followers is being cancelled: the new one starts after it has
            # saved its part state, so the two never write the same partial file.
            previous = t.task if t is not None else None
            t = Transfer(key, total)
            # owned by this registry (_active) until done; every follower awaits it
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
        if t.committed is not None:
            self._unsynced.append(t.committed)
        if not task.cancelled():
            task.exception()  # retrieved here; followers re-raise it

    def sync_committed(self) -> None:
        """Start fsyncing the blobs committed so far, in the background."""
        blobs, self._unsynced = self._unsynced, []
        for blob in blobs:
            # owned by _syncs until done; aclose() awaits what is left
            sync = asyncio.ensure_future(asyncio.to_thread(sync_blob, blob))
            self._syncs.add(sync)
            sync.add_done_callback(self._synced)

    def _synced(self, sync: asyncio.Future[None]) -> None:
        self._syncs.discard(sync)
        if not sync.cancelled() and (exc := sync.exception()) is not None:
            log.warning("fsync of a pulled blob failed (checked again at start-up): %s", exc)

    async def aclose(self) -> None:
        """Wait until every committed blob is on disk."""
        self.sync_committed()
        while self._syncs:
            await asyncio.wait(set(self._syncs))

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
            await self.leave(t)

    async def leave(self, t: Transfer, *, discard: bool = False) -> None:
        """One follower is done with ``t`` (:meth:`follow` calls it); when the last one leaves a
        transfer that is still running, it is cancelled and its part state saved for a resume,
        or with ``discard`` (a blob fetched ahead for a pull that failed) removed."""
        t.waiters -= 1
        task = t.task
        if t.waiters == 0 and task is not None and not task.done():
            log.info("every pull of %s left; pausing its download", t.key)
            task.cancel()
            await asyncio.wait({task})
            if discard and t.partial is not None:
                await asyncio.to_thread(_discard, t.partial)


async def _after(previous: asyncio.Task[str] | None, job: Job, t: Transfer) -> str:
    if previous is not None and not previous.done():
        await asyncio.wait({previous})
    return await job(t)


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
    t.partial = partial
    parts = await asyncio.to_thread(_resume_or_plan, partial, t.total, part_min)
    t.completed = sum(p.Completed for p in parts)
    if t.completed:
        log.info("resuming %s: %d of %d bytes on disk", t.key, t.completed, t.total)
    fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
    hasher = PrefixHasher(fd, parts)
    try:
        if os.fstat(fd).st_size != t.total:
            os.ftruncate(fd, t.total)
        hasher.kick()  # a resumed download's saved prefix is hashed while the rest arrives
        todo = [p for p in parts if p.Completed < p.Size]
        buffer = write_buffer(len(todo))
        tasks = [  # owned here: gathered below, cancelled if one fails
            asyncio.ensure_future(
                fetch_part(
                    t,
                    reader,
                    fd,
                    partial,
                    p,
                    hasher,
                    buffer=buffer,
                    max_tries=max_tries,
                    backoff_s=backoff_s,
                )
            )
            for p in todo
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
        digest = await hasher.finish(t.total)
        if expected is not None and digest != expected:
            await asyncio.to_thread(_discard, partial)
            raise RegistryError(
                f"digest mismatch, file must be downloaded again: want {expected}, got {digest}"
            )
    finally:
        await hasher.aclose()  # no worker thread touches the file after this
        os.close(fd)
    target = final(digest)
    await asyncio.to_thread(_commit, partial, target)
    t.committed = target
    return digest


def _resume_or_plan(partial: Path, total: int, part_min: int) -> list[Part]:
    """The saved parts of an interrupted download, else a fresh plan (stale state removed)."""
    parts = load_parts(partial, total)
    if parts is None:
        _discard(partial)
        parts = plan_parts(total, part_min)
    return parts


def _discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    clear_state(partial)


def _commit(partial: Path, target: Path) -> None:
    mark_unsynced(target)
    os.replace(partial, target)
    fsync_dir(target.parent)
    clear_state(partial)
