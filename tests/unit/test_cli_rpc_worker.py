"""``power rpc-worker``: options checked, then the process becomes llama.cpp's RPC server
(``os.execv`` is the seam: the server itself runs in the rpc nox session)."""

from __future__ import annotations

import os
import sys

import pytest
from click.testing import CliRunner

from power.cli import main
from power.cli.rpc_worker import parse_size


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


def test_mem_is_passed_to_the_server_in_bytes(execs: list[list[str]]) -> None:
    result = CliRunner().invoke(main, ["rpc-worker", "--threads", "2", "--mem", "512M"])
    assert result.exit_code == 0, result.output
    assert execs[0][3:] == ["runner.rpc_worker", "127.0.0.1", "50052", "2", str(512 << 20)]


def test_without_mem_the_server_gets_no_cap(execs: list[list[str]]) -> None:
    result = CliRunner().invoke(main, ["rpc-worker", "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert execs[0][3:] == ["runner.rpc_worker", "127.0.0.1", "50052", "2"]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2G", 2 << 30),
        ("512M", 512 << 20),
        ("512m", 512 << 20),
        ("1.5GiB", 3 << 29),
        ("2gb", 2 << 30),
        ("64 K", 64 << 10),
        ("1T", 1 << 40),
        ("4096", 4096),
    ],
)
def test_sizes_are_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "'0' is no memory at all"),
        ("0G", "'0G' is no memory at all"),
        ("-1G", "'-1G' is not a size such as 512M or 2G"),
        ("lots", "'lots' is not a size such as 512M or 2G"),
        ("2X", "'2X' is not a size such as 512M or 2G"),
        ("", "'' is not a size such as 512M or 2G"),
    ],
)
def test_nonsense_mem_is_refused(execs: list[list[str]], value: str, reason: str) -> None:
    result = CliRunner().invoke(main, ["rpc-worker", "--mem", value])
    assert result.exit_code == 2
    assert f"Error: Invalid value for '--mem': {reason}" in result.output
    assert execs == []
