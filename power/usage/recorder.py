"""``UsageRecorder``: the observer that writes each finished inference request to the usage
database, from a thread of its own.

``request_done`` runs on the event loop and only queues a ``Record``. The writer thread waits
for the queue, takes everything in it (up to ``MAX_BATCH``) and commits it in one transaction,
so a record is on disk within a commit's time of its request ending (well under the one second
a ``kill -9`` of the daemon may cost) and a busy daemon writes in batches. The thread also prunes
rows past the retention at start and every ``PRUNE_INTERVAL_S``.

``flush`` returns a future that completes once everything queued before it is committed: a query
flushes first, so it sees every request that ended before it. Queries then run one at a time on
a thread of the recorder's own, never on the loop's default executor, which inference needs
(template rendering): however many clients ask at once, usage takes one thread. ``close`` writes
what is queued, ends both threads and joins them; ``open_recorder`` owns a recorder for
``power serve``.

A database that cannot be opened or written is logged at ERROR with its path (the daemon goes on
serving models) and the records are dropped; queries answer what the file holds (nothing when
there is no file) or fail with SQLite's reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from pathlib import Path

from power.errors import PowerError, ShuttingDownError
from power.observe import RequestInfo
from power.usage import db

__all__ = ["MAX_BATCH", "PRUNE_INTERVAL_S", "UsageRecorder", "open_recorder"]

log = logging.getLogger(__name__)

MAX_BATCH = 1000
PRUNE_INTERVAL_S = 24 * 3600.0

_Flush = concurrent.futures.Future[None]


class _Close:
    """The queue's last item."""


def _utc_today() -> date:
    return datetime.now(UTC).date()


class UsageRecorder:
    """Records inference requests (``info.inference``) into the database at ``path``."""

    def __init__(
        self, path: Path, *, retention_days: int, today: Callable[[], date] = _utc_today
    ) -> None:
        self.path = path
        self.retention_days = retention_days
        self._today = today
        self._queue: queue.SimpleQueue[db.Record | _Flush | _Close] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="power-usage", daemon=True)
        self._queries = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="power-usage-query"
        )

    @classmethod
    def start(
        cls, path: Path, *, retention_days: int, today: Callable[[], date] = _utc_today
    ) -> UsageRecorder:
        """A recorder with its writer thread running; ``close`` it."""
        recorder = cls(path, retention_days=retention_days, today=today)
        recorder._thread.start()
        return recorder

    # -- the event loop's side ---------------------------------------------------------------

    def request_done(self, info: RequestInfo) -> None:
        if info.inference and not self._closed:
            self._queue.put(db.Record.of(info))

    def flush(self) -> _Flush:
        """Completes once every record queued before it is written (or dropped, on an error)."""
        done: _Flush = concurrent.futures.Future()
        if self._closed or not self._thread.is_alive():
            done.set_result(None)
        else:
            self._queue.put(done)
        return done

    async def summary(
        self, *, start: date | None = None, end: date | None = None, model: str | None = None
    ) -> list[db.Usage]:
        """Usage per day and model, including every request that has ended."""
        await asyncio.wrap_future(self.flush())
        query = functools.partial(db.summary, self.path, start=start, end=end, model=model)
        try:
            queued = self._queries.submit(query)
        except RuntimeError as exc:  # closed
            raise ShuttingDownError() from exc
        try:
            return await asyncio.wrap_future(queued)  # (cancelled: dropped if not started)
        except sqlite3.Error as exc:
            raise PowerError(f"usage database {self.path}: {exc}") from exc

    def close(self) -> None:
        """Write what is queued, then stop the writer; queries already asked are answered.
        Blocks; idempotent."""
        if not self._closed:
            self._closed = True
            self._queue.put(_Close())
        if self._thread.is_alive():
            self._thread.join()
        self._queries.shutdown(wait=True)

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            conn: sqlite3.Connection | None = db.connect(self.path)
        except (sqlite3.Error, OSError) as exc:
            log.error(
                "usage database %s cannot be opened (%s): nothing is recorded", self.path, exc
            )
            conn = None
        try:
            self._loop(conn)
        finally:
            if conn is not None:
                conn.close()
            while True:  # a flush that raced with close
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, concurrent.futures.Future):
                    item.set_result(None)

    def _loop(self, conn: sqlite3.Connection | None) -> None:
        next_prune = time.monotonic()
        while True:
            # (without a database there is nothing to prune: wait for work alone, not spin)
            wait = None if conn is None else max(0.0, next_prune - time.monotonic())
            try:
                first = self._queue.get(timeout=wait)
            except queue.Empty:
                first = None
            records, flushes, closing = self._take(first)
            if records and conn is not None:
                self._write(conn, records)
            for done in flushes:
                done.set_result(None)
            if conn is not None and time.monotonic() >= next_prune:
                self._prune(conn)
                next_prune = time.monotonic() + PRUNE_INTERVAL_S
            if closing:
                return

    def _take(
        self, first: db.Record | _Flush | _Close | None
    ) -> tuple[list[db.Record], list[_Flush], bool]:
        """``first`` and whatever else is queued, up to ``MAX_BATCH`` records or the end."""
        records: list[db.Record] = []
        flushes: list[_Flush] = []
        item = first
        while item is not None:
            if isinstance(item, _Close):
                return records, flushes, True
            if isinstance(item, db.Record):
                records.append(item)
            else:
                flushes.append(item)
            if len(records) >= MAX_BATCH:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                item = None
        return records, flushes, False

    def _write(self, conn: sqlite3.Connection, records: list[db.Record]) -> None:
        try:
            db.insert(conn, records)
        except sqlite3.Error as exc:
            log.error("usage database %s: %d record(s) lost: %s", self.path, len(records), exc)

    def _prune(self, conn: sqlite3.Connection) -> None:
        try:
            gone = db.prune(conn, self._today(), self.retention_days)
        except sqlite3.Error as exc:
            log.error("usage database %s: pruning failed: %s", self.path, exc)
            return
        if gone:
            log.info("usage: %d record(s) older than %d days pruned", gone, self.retention_days)


@contextlib.asynccontextmanager
async def open_recorder(path: Path, *, retention_days: int) -> AsyncIterator[UsageRecorder]:
    """A running recorder for the daemon's life; on exit what is queued is written."""
    recorder = UsageRecorder.start(path, retention_days=retention_days)
    try:
        yield recorder
    finally:
        closing = asyncio.ensure_future(asyncio.to_thread(recorder.close))
        try:
            await asyncio.shield(closing)
        finally:  # cancelled while closing: the queued records are still written first
            if not closing.done():
                recorder.close()
