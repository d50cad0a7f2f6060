"""The usage database: one row per finished inference request, in SQLite (``<home>/usage.db``),
and the per-day totals that queries read.

Table ``requests``:

```
id                 INTEGER PRIMARY KEY
time               REAL     unix seconds when the request arrived
day                TEXT     its UTC date, YYYY-MM-DD (what queries group and filter by)
model              TEXT     "name:tag" as the store spells it
kind               TEXT     generate, chat or embed (the native handler under any API)
route              TEXT     the HTTP route: /api/chat, /v1/chat/completions, /v1/messages, ...
status             INTEGER  the HTTP status sent
failed             INTEGER  1 when it failed (an error status, or an error after the first byte)
error              TEXT     why it failed; '' when it did not
prompt_tokens      INTEGER  the whole prompt, cached part included
cached_tokens      INTEGER  of which came from the KV cache
completion_tokens  INTEGER  tokens generated
duration_s         REAL     from arrival to the response's last byte
```

Table ``daily``: per UTC day and model (its key), ``requests``, ``prompt_tokens`` and
``completion_tokens`` summed over the rows of ``requests``. A trigger adds each inserted row in
the insert's own transaction, and ``prune`` deletes the same whole days from both, so a query
reads one row per day and model, however many requests there were, and answers what summing
``requests`` would. Rows never leave ``requests`` any other way.

``PRAGMA user_version``: 1 had ``requests`` alone; 2 added ``daily``. ``connect`` brings an
older file up to date in one transaction, building ``daily`` from the rows already there (once:
seconds for millions of rows); a query of a file still at 1 sums ``requests``.

The file is in WAL mode with ``synchronous=NORMAL``: a committed row survives the daemon's
death (``kill -9``); only a power loss may cost the last commits. Connections never cross
threads: the recorder's writer thread holds one, and each query opens its own, read-only (a WAL
reader never waits for the writer). No cost is stored: it is computed when asked, at the prices
configured then.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import astuple, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from power.observe import RequestInfo

__all__ = [
    "SCHEMA_VERSION",
    "Record",
    "Usage",
    "connect",
    "day_of",
    "insert",
    "prune",
    "summary",
    "usage_path",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 5.0  # another daemon on the same data folder may hold the write lock

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    day TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    route TEXT NOT NULL,
    status INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    error TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    duration_s REAL NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS requests_by_day ON requests (day, model)",
    """CREATE TABLE IF NOT EXISTS daily (
    day TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    PRIMARY KEY (day, model)
) WITHOUT ROWID""",
    """CREATE TRIGGER IF NOT EXISTS requests_into_daily AFTER INSERT ON requests BEGIN
    INSERT INTO daily VALUES (NEW.day, NEW.model, 1, NEW.prompt_tokens, NEW.completion_tokens)
    ON CONFLICT (day, model) DO UPDATE SET
        requests = requests + 1,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens;
END""",
)
_BACKFILL = (
    "INSERT INTO daily SELECT day, model, count(*), sum(prompt_tokens), sum(completion_tokens)"
    " FROM requests GROUP BY day, model"
)
_COLUMNS = (
    "time, day, model, kind, route, status, failed, error, prompt_tokens, cached_tokens,"
    " completion_tokens, duration_s"
)
_INSERT = f"INSERT INTO requests ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True, slots=True)
class Record:
    """One row, in column order."""

    time: float
    day: str
    model: str
    kind: str
    route: str
    status: int
    failed: bool
    error: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    duration_s: float

    @classmethod
    def of(cls, info: RequestInfo) -> Record:
        return cls(
            time=info.wall,
            day=day_of(info.wall),
            model=info.model,
            kind=info.kind,
            route=info.route,
            status=info.status,
            failed=info.failed,
            error=info.error,
            prompt_tokens=info.prompt_tokens,
            cached_tokens=info.cached_tokens,
            completion_tokens=info.output_tokens,
            duration_s=info.duration_s,
        )


@dataclass(frozen=True, slots=True)
class Usage:
    """What one model did on one UTC day."""

    day: str
    model: str
    requests: int  # failed ones included: their tokens were spent too
    prompt_tokens: int
    completion_tokens: int


def usage_path(home: str) -> Path:
    """The usage database of the data folder ``home``."""
    return Path(home).expanduser() / "usage.db"


def day_of(timestamp: float) -> str:
    """The UTC date of a unix time, YYYY-MM-DD."""
    return datetime.fromtimestamp(timestamp, UTC).date().isoformat()


def connect(path: Path) -> sqlite3.Connection:
    """The writer's connection: the file (and its folder) made if missing, WAL, the schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        version = _version(conn)
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this A3S Power knows ({SCHEMA_VERSION})"
            )
        if version < SCHEMA_VERSION:
            _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """The schema made or brought up to date, all or nothing: a daemon killed halfway leaves the
    old file, and another daemon on the same file waits for the write lock, then finds it done."""
    conn.execute("BEGIN IMMEDIATE")
    built = 0
    try:
        version = _version(conn)
        if version < SCHEMA_VERSION:
            for statement in _SCHEMA:
                conn.execute(statement)
            built = conn.execute(_BACKFILL).rowcount  # none in a new file
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    if built:
        log.info("usage database %s: schema %d -> %d, %d per-day total(s) built", path,
                 version, SCHEMA_VERSION, built)  # fmt: skip


def insert(conn: sqlite3.Connection, records: Iterable[Record]) -> None:
    """Add ``records`` in one transaction."""
    with conn:
        conn.executemany(_INSERT, (astuple(r) for r in records))


def prune(conn: sqlite3.Connection, today: date, keep_days: int) -> int:
    """Delete the rows of days more than ``keep_days`` before ``today`` (0: keep all); returns
    how many went."""
    if keep_days <= 0:
        return 0
    cutoff = (today - timedelta(days=keep_days)).isoformat()
    with conn:
        conn.execute("DELETE FROM daily WHERE day < ?", (cutoff,))
        return conn.execute("DELETE FROM requests WHERE day < ?", (cutoff,)).rowcount


def summary(
    path: Path, *, start: date | None = None, end: date | None = None, model: str | None = None
) -> list[Usage]:
    """Per UTC day and model, oldest day first: ``start`` and ``end`` inclusive, ``model``
    compared without case. A missing file is no usage."""
    where, args = [], []
    if start is not None:
        where.append("day >= ?")
        args.append(start.isoformat())
    if end is not None:
        where.append("day <= ?")
        args.append(end.isoformat())
    if model is not None:
        where.append("model = ? COLLATE NOCASE")
        args.append(model)
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    try:
        if _version(conn) >= 2:
            table, sums, group = "daily", "requests, prompt_tokens, completion_tokens", ""
        else:  # not brought up to date yet (its writer could not): the raw rows, slowly
            table, group = "requests", " GROUP BY day, model"
            sums = "count(*), sum(prompt_tokens), sum(completion_tokens)"
        query = (
            f"SELECT day, model, {sums} FROM {table}"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f"{group} ORDER BY day, model"
        )
        return [Usage(*row) for row in conn.execute(query, args)]
    finally:
        conn.close()
