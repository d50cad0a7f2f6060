"""``power rpc-worker``: options checked, then the process becomes llama.cpp's RPC server
(``os.execv`` is the seam: the server itself runs in the rpc nox session)."""

from __future__ import annotations

import os
import sys

import pytest
from click.testing import CliRunner

from power.cli import main


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append([path, *argv]))
    return calls


def test_a_loopback_worker_becomes_the_rpc_server(execs: list[list[str]]) -> None:
    result = CliRunner().invoke(main, ["rpc-worker", "--port", "50060", "--threads", "3"])
    assert result.exit_code == 0, result.output
    exe = sys.executable
    assert execs == [[exe, exe, "-m", "runner.rpc_worker", "127.0.0.1", "50060", "3"]]


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "worker.lan", "::"])
def test_a_non_loopback_address_is_refused_without_allow_remote(
    execs: list[list[str]], host: str
) -> None:
    result = CliRunner().invoke(main, ["rpc-worker", "--host", host])
    assert result.exit_code == 2
    assert "no authentication" in result.output
    assert "--allow-remote" in result.output
    assert execs == []


def test_allow_remote_listens_there_with_a_warning(execs: list[list[str]]) -> None:
    result = CliRunner().invoke(main, ["rpc-worker", "--host", "0.0.0.0", "--allow-remote"])
    assert result.exit_code == 0, result.output
    assert "Warning: serving unauthenticated llama.cpp RPC on 0.0.0.0:50052" in result.output
    assert execs[0][3:6] == ["runner.rpc_worker", "0.0.0.0", "50052"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.5"])
def test_loopback_addresses_need_no_flag(execs: list[list[str]], host: str) -> None:
    result = CliRunner().invoke(main, ["rpc-worker", "--host", host])
    assert result.exit_code == 0, result.output
    assert execs[0][4] == host
