"""How failures reach the log: overload is a WARNING at most once per window, never an ERROR."""

from __future__ import annotations

import logging

import pytest

from power.errors import (
    ClientClosedError,
    InvalidRequestError,
    RunnerCrashedError,
    ServerBusyError,
    ShuttingDownError,
    _Overload,
    reported,
)


def test_a_burst_of_refusals_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    overload = _Overload()
    with caplog.at_level(logging.INFO, logger="power.errors"):
        for _ in range(1247):
            overload.note("POST", "/api/chat", ServerBusyError())
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "POST /api/chat refused: server busy, please try again.  maximum pending"
         " requests exceeded"),
    ]  # fmt: skip


def test_overload_and_shutdown_are_never_errors(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="power.errors"):
        for exc in (ServerBusyError(), ShuttingDownError()) * 5:
            assert reported(exc, method="POST", path="/api/generate") is exc
    assert all(r.levelname == "WARNING" for r in caplog.records)
    assert len(caplog.records) <= 1  # (another test may have opened the window already)


@pytest.mark.parametrize(
    ("exc", "level"),
    [
        (RunnerCrashedError("runner died"), "ERROR"),
        (ClientClosedError("gone"), "INFO"),
        (InvalidRequestError("bad"), None),
        (KeyError("bug"), "ERROR"),
    ],
)
def test_each_failure_is_logged_at_its_level(
    caplog: pytest.LogCaptureFixture, exc: Exception, level: str | None
) -> None:
    with caplog.at_level(logging.INFO, logger="power.errors"):
        err = reported(exc, method="GET", path="/x")
    assert [r.levelname for r in caplog.records] == ([level] if level else [])
    if isinstance(exc, KeyError):
        assert str(err) == "internal server error"
        assert caplog.records[0].exc_info is not None  # the bug's traceback
