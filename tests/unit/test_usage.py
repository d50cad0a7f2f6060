"""The usage database, its report and the recorder thread, on a real SQLite file."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import psutil
import pytest

from power.config import load_settings
from power.observe import RequestInfo
from power.settings import ConfigError, Price
from power.usage import db
from power.usage.recorder import UsageRecorder
from power.usage.report import report


def ts(day: str, hour: int = 12) -> float:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC).timestamp()


def info(
    model: str = "smollm2:latest",
    *,
    at: float | None = None,
    prompt: int = 10,
    output: int = 5,
    status: int = 200,
    error: str = "",
) -> RequestInfo:
    return RequestInfo(
        method="POST",
        path="/api/generate",
        client="127.0.0.1:1",
        started=0.0,
        wall=ts("2025-03-01") if at is None else at,
        route="/api/generate",
        status=status,
        duration_s=0.5,
        kind="generate",
        model=model,
        prompt_tokens=prompt,
        cached_tokens=2,
        output_tokens=output,
        error=error,
    )


def write(path: Path, *infos: RequestInfo) -> None:
    conn = db.connect(path)
    try:
        db.insert(conn, [db.Record.of(i) for i in infos])
    finally:
        conn.close()


# -- settings --------------------------------------------------------------------------------


def test_prices_and_retention_come_from_config_toml_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        "usage_retention_days = 30\n"
        '[pricing."SmolLM2"]\ninput_per_million = 2.5\noutput_per_million = 10\n'
        '[pricing."qwen2.5:7b"]\noutput_per_million = 1\n'
        "[pricing.default]\ninput_per_million = 0.5\noutput_per_million = 1.5\n"
    )
    settings = load_settings(path=config, env={}, cli={})
    assert settings.usage_retention_days == 30
    # a bare name means :latest, and names compare without case, as requests spell them
    assert settings.price_of("smollm2:latest") == Price(
        input_per_million=2.5, output_per_million=10
    )
    assert settings.price_of("Qwen2.5:7B") == Price(output_per_million=1)
    assert settings.price_of("llama3:8b") == Price(input_per_million=0.5, output_per_million=1.5)
    env = {"A3S_POWER_USAGE_RETENTION_DAYS": "7"}
    assert load_settings(path=config, env=env, cli={}).usage_retention_days == 7


def test_without_prices_everything_is_free_and_a_year_is_kept(tmp_path: Path) -> None:
    settings = load_settings(path=tmp_path / "none.toml", env={}, cli={})
    assert settings.price_of("smollm2:latest").cost(1000, 1000) == 0.0
    assert settings.usage_retention_days == 365


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ('[pricing."no good!"]\ninput_per_million = 1\n', "invalid model name 'no good!'"),
        (
            '[pricing.a]\ninput_per_million = 1\n[pricing."a:latest"]\n',
            "'a:latest' is priced twice",
        ),
        ("[pricing.a]\ninput_per_millon = 1\n", "unknown field `input_per_millon`"),
        ("[pricing.a]\ninput_per_million = -1\n", "Expected `float` >= 0"),
        ("usage_retention_days = -1\n", "key 'usage_retention_days'"),
    ],
)
def test_bad_prices_and_retention_name_the_file_and_key(
    tmp_path: Path, toml: str, error: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(path=config, env={}, cli={})
    assert str(caught.value).startswith(str(config))
    assert error in str(caught.value)


# -- db ----------------------------------------------------------------------------------------


def test_a_day_is_the_utc_date_of_the_arrival() -> None:
    assert db.day_of(ts("2025-03-01", hour=0)) == "2025-03-01"
    assert db.day_of(ts("2025-03-01", hour=0) - 1) == "2025-02-28"


def test_the_file_is_in_wal_mode_with_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "usage.db"
    db.connect(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (db.SCHEMA_VERSION,)
    finally:
        conn.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={db.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(sqlite3.DatabaseError, match="newer"):
        db.connect(path)


def test_every_column_is_stored_and_failures_are_marked(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    write(path, info(), info(status=500, error="runner crashed"), info(error="cut", status=200))
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT day, model, kind, route, status, failed, error, prompt_tokens, cached_tokens,"
        " completion_tokens, duration_s FROM requests ORDER BY id"
    ).fetchall()
    conn.close()
    common = ("2025-03-01", "smollm2:latest", "generate", "/api/generate")
    assert rows == [
        (*common, 200, 0, "", 10, 2, 5, 0.5),
        (*common, 500, 1, "runner crashed", 10, 2, 5, 0.5),
        (*common, 200, 1, "cut", 10, 2, 5, 0.5),
    ]


def test_summary_sums_per_day_and_model_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    write(
        path,
        info(at=ts("2025-03-02"), prompt=1, output=2),
        info(at=ts("2025-03-01"), prompt=10, output=20),
        info(at=ts("2025-03-01", hour=23), prompt=100, output=200, status=500, error="x"),
        info("qwen:7b", at=ts("2025-03-01"), prompt=3, output=4),
    )
    assert db.summary(path) == [
        db.Usage("2025-03-01", "qwen:7b", 1, 3, 4),
        db.Usage("2025-03-01", "smollm2:latest", 2, 110, 220),
        db.Usage("2025-03-02", "smollm2:latest", 1, 1, 2),
    ]


def test_summary_dates_are_inclusive_and_the_model_ignores_case(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    days = ["2025-02-28", "2025-03-01", "2025-03-02", "2025-03-03"]
    write(path, *(info(at=ts(d)) for d in days), info("qwen:7b", at=ts("2025-03-02")))
    got = db.summary(path, start=date(2025, 3, 1), end=date(2025, 3, 2))
    assert [(u.day, u.model) for u in got] == [
        ("2025-03-01", "smollm2:latest"),
        ("2025-03-02", "qwen:7b"),
        ("2025-03-02", "smollm2:latest"),
    ]
    assert [u.day for u in db.summary(path, start=date(2025, 3, 3))] == ["2025-03-03"]
    assert [u.day for u in db.summary(path, end=date(2025, 2, 28))] == ["2025-02-28"]
    assert [u.day for u in db.summary(path, model="QWEN:7B")] == ["2025-03-02"]


def test_no_file_is_no_usage_and_the_query_makes_none(tmp_path: Path) -> None:
    assert db.summary(tmp_path / "usage.db") == []
    assert not (tmp_path / "usage.db").exists()


@pytest.mark.parametrize(
    ("keep_days", "left"),
    [
        (1, ["2025-03-09", "2025-03-10"]),
        (2, ["2025-03-08", "2025-03-09", "2025-03-10"]),
        (0, ["2025-03-01", "2025-03-08", "2025-03-09", "2025-03-10"]),
    ],
)
def test_prune_drops_days_more_than_keep_days_before_today(
    tmp_path: Path, keep_days: int, left: list[str]
) -> None:
    path = tmp_path / "usage.db"
    days = ["2025-03-01", "2025-03-08", "2025-03-09", "2025-03-10"]
    write(path, *(info(at=ts(d)) for d in days))
    conn = db.connect(path)
    gone = db.prune(conn, date(2025, 3, 10), keep_days)
    conn.close()
    assert gone == len(days) - len(left)
    assert [u.day for u in db.summary(path)] == left


# -- report ------------------------------------------------------------------------------------


def test_the_report_prices_each_row_and_totals_them() -> None:
    prices = {"a:latest": Price(input_per_million=2.5, output_per_million=10.0)}
    rows = [
        db.Usage("2025-03-01", "a:latest", 2, 1_000_000, 300_000),
        db.Usage("2025-03-01", "b:latest", 1, 5, 5),
        db.Usage("2025-03-02", "a:latest", 1, 3, 7),
    ]
    body = report(rows, lambda model: prices.get(model, Price()))
    assert body == {
        "data": [
            {"date": "2025-03-01", "model": "a:latest", "requests": 2, "prompt_tokens": 1_000_000,
             "completion_tokens": 300_000, "total_tokens": 1_300_000, "cost": 5.5},
            {"date": "2025-03-01", "model": "b:latest", "requests": 1, "prompt_tokens": 5,
             "completion_tokens": 5, "total_tokens": 10, "cost": 0.0},
            {"date": "2025-03-02", "model": "a:latest", "requests": 1, "prompt_tokens": 3,
             "completion_tokens": 7, "total_tokens": 10, "cost": 0.0000775},
        ],
        "total": {"requests": 4, "prompt_tokens": 1_000_008, "completion_tokens": 300_012,
                  "total_tokens": 1_300_020, "cost": 5.5000775},
    }  # fmt: skip


def test_an_empty_report_has_a_zero_total() -> None:
    assert report([], lambda model: Price()) == {
        "data": [],
        "total": {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0,
                  "total_tokens": 0, "cost": 0.0},
    }  # fmt: skip


# -- recorder ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_recorder_writes_inference_requests_and_skips_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    recorder = UsageRecorder.start(path, retention_days=0)
    try:
        recorder.request_done(info(prompt=7, output=3))
        recorder.request_done(info(model=""))  # /api/tags and friends: no model ran
        recorder.request_done(info("qwen:7b", prompt=1, output=1, status=500, error="boom"))
        got = await recorder.summary()
    finally:
        recorder.close()
    assert got == [
        db.Usage("2025-03-01", "qwen:7b", 1, 1, 1),
        db.Usage("2025-03-01", "smollm2:latest", 1, 7, 3),
    ]


def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    recorder = UsageRecorder.start(path, retention_days=0)
    for _ in range(2500):  # more than one batch
        recorder.request_done(info(prompt=1, output=1))
    recorder.close()
    recorder.request_done(info())  # after close: not queued for a writer that is gone
    recorder.close()  # idempotent
    assert db.summary(path) == [db.Usage("2025-03-01", "smollm2:latest", 2500, 2500, 2500)]


def test_the_recorder_prunes_when_it_starts(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    write(path, info(at=ts("2025-01-01")), info(at=ts("2025-03-01")))
    recorder = UsageRecorder.start(path, retention_days=30, today=lambda: date(2025, 3, 1))
    recorder.flush().result(timeout=10)
    recorder.close()
    assert [u.day for u in db.summary(path)] == ["2025-03-01"]


@pytest.mark.anyio
async def test_an_unusable_database_is_logged_and_serving_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = blocker / "usage.db"  # its folder is a file
    with caplog.at_level(logging.ERROR, logger="power.usage.recorder"):
        recorder = UsageRecorder.start(path, retention_days=0)
        recorder.request_done(info())
        await asyncio.wait_for(asyncio.wrap_future(recorder.flush()), timeout=10)
        recorder.close()
    assert f"usage database {path} cannot be opened" in caplog.text


def test_a_database_that_cannot_be_opened_leaves_the_writer_waiting_not_spinning(
    tmp_path: Path,
) -> None:
    path = tmp_path / "usage.db"
    path.mkdir()  # (not a file sqlite can open)
    recorder = UsageRecorder.start(path, retention_days=30)
    try:
        (native_id,) = [t.native_id for t in threading.enumerate() if t.name == "power-usage"]
        writer = next(t for t in psutil.Process().threads() if t.id == native_id)
        time.sleep(1.0)
        now = next(t for t in psutil.Process().threads() if t.id == writer.id)
        assert now.user_time + now.system_time - writer.user_time - writer.system_time < 0.3
    finally:
        recorder.close()
