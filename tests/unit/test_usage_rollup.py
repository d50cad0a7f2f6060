"""The usage database's per-day totals: they answer what summing the raw rows would, through
inserts and pruning, an old file is brought up to date once, and queries run on the recorder's
own thread, not the loop's default executor."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import sqlite3
import threading
from dataclasses import astuple
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from power.usage import db
from power.usage.recorder import UsageRecorder

FIRST = date(2025, 3, 1)
# two spellings of one name: the raw rows group them apart and a model filter finds both
MODELS = ["smollm2:latest", "SmolLM2:latest", "qwen:7b", "llama3:8b"]

# the schema as user_version 1 made it (before the totals)
OLD_SCHEMA = """
CREATE TABLE requests (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL,
    kind TEXT NOT NULL, route TEXT NOT NULL, status INTEGER NOT NULL, failed INTEGER NOT NULL,
    error TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL, duration_s REAL NOT NULL
);
CREATE INDEX requests_by_day ON requests (day, model);
PRAGMA user_version=1;
"""


def record(rng: random.Random) -> db.Record:
    day = FIRST + timedelta(days=rng.randrange(12))
    at = datetime(day.year, day.month, day.day, rng.randrange(24), tzinfo=UTC).timestamp()
    failed = rng.random() < 0.2
    return db.Record(
        time=at,
        day=day.isoformat(),
        model=rng.choice(MODELS),
        kind="chat",
        route="/api/chat",
        status=500 if failed else 200,
        failed=failed,
        error="boom" if failed else "",
        prompt_tokens=rng.randrange(5000),
        cached_tokens=0,
        completion_tokens=rng.randrange(2000),
        duration_s=0.1,
    )


def raw_summary(
    path: Path, start: date | None = None, end: date | None = None, model: str | None = None
) -> list[db.Usage]:
    """What summing the raw rows answers: the query before the totals existed."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT day, model, count(*), sum(prompt_tokens), sum(completion_tokens)"
            " FROM requests WHERE (?1 IS NULL OR day >= ?1) AND (?2 IS NULL OR day <= ?2)"
            " AND (?3 IS NULL OR model = ?3 COLLATE NOCASE)"
            " GROUP BY day, model ORDER BY day, model",
            (start and start.isoformat(), end and end.isoformat(), model),
        ).fetchall()
    finally:
        conn.close()
    return [db.Usage(*row) for row in rows]


def totals(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM daily ORDER BY day, model").fetchall()
    finally:
        conn.close()


def check_queries(path: Path, rng: random.Random) -> None:
    """The totals table holds the raw rows' sums, and ``summary`` answers as they do."""
    assert totals(path) == [as_row(u) for u in raw_summary(path)]
    for _ in range(15):
        start = FIRST + timedelta(days=rng.randrange(-1, 13)) if rng.random() < 0.5 else None
        end = FIRST + timedelta(days=rng.randrange(-1, 13)) if rng.random() < 0.5 else None
        model = (
            rng.choice([*MODELS, "SMOLLM2:LATEST", "ghost:latest"]) if rng.random() < 0.5 else None
        )
        got = db.summary(path, start=start, end=end, model=model)
        assert got == raw_summary(path, start, end, model), (start, end, model)


def as_row(u: db.Usage) -> tuple[object, ...]:
    return (u.day, u.model, u.requests, u.prompt_tokens, u.completion_tokens)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_totals_answer_as_the_raw_rows_through_inserts_and_pruning(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    path = tmp_path / "usage.db"
    conn = db.connect(path)
    try:
        for _ in range(12):
            if rng.random() < 0.25:
                today = FIRST + timedelta(days=rng.randrange(14))
                db.prune(conn, today, rng.randrange(0, 8))
            else:
                db.insert(conn, [record(rng) for _ in range(rng.randrange(1, 200))])
            check_queries(path, rng)
        assert raw_summary(path)  # (something is left to compare)
    finally:
        conn.close()


def test_an_old_database_gets_its_totals_built_once_and_kept(tmp_path: Path) -> None:
    rng = random.Random(7)
    path = tmp_path / "usage.db"
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    with old:
        old.executemany(
            "INSERT INTO requests (time, day, model, kind, route, status, failed, error,"
            " prompt_tokens, cached_tokens, completion_tokens, duration_s)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [astuple(record(rng)) for _ in range(500)],
        )
    old.close()
    before = raw_summary(path)
    assert db.summary(path) == before  # not brought up to date yet: the raw rows answer

    db.connect(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (db.SCHEMA_VERSION,)
    conn.close()
    assert totals(path) == [as_row(u) for u in before]
    db.connect(path).close()  # a second start builds nothing twice
    assert totals(path) == [as_row(u) for u in before]

    # the recorder prunes it at start (days before 03-05 go), then new rows come in
    recorder = UsageRecorder.start(path, retention_days=5, today=lambda: date(2025, 3, 10))
    recorder.flush().result(timeout=30)
    recorder.close()
    assert min(u.day for u in db.summary(path)) == "2025-03-05"
    conn = db.connect(path)
    try:
        db.insert(conn, [record(rng) for _ in range(300)])
    finally:
        conn.close()
    check_queries(path, rng)


def test_queries_never_wait_for_the_default_executor(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    conn = db.connect(path)
    rng = random.Random(11)
    db.insert(conn, [record(rng) for _ in range(100)])
    conn.close()
    expected = raw_summary(path)

    async def main() -> list[list[db.Usage]]:
        loop = asyncio.get_running_loop()
        # a default executor whose only thread is taken, as inference's template rendering and
        # many slow usage queries took it before
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
        release = threading.Event()
        busy = loop.run_in_executor(None, release.wait)
        recorder = UsageRecorder.start(path, retention_days=0)
        try:
            queries = asyncio.gather(*(recorder.summary() for _ in range(8)))
            return await asyncio.wait_for(queries, timeout=30)  # (a hang guard)
        finally:
            release.set()
            await busy
            await asyncio.to_thread(recorder.close)

    assert asyncio.run(main()) == [expected] * 8
