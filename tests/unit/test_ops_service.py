"""A service cannot go stale on its stop time: the daemon, once stopping, tells systemd how long
its current configuration needs (`EXTEND_TIMEOUT_USEC`), an older unit that cannot be told is
pointed out by `power service status`, an infinite grace means no limit (not a crash), and the
paths a service is given are absolute."""

from __future__ import annotations

import math
import os
import plistlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from power import daemon
from power.serve import stop_timeout_s
from power.settings import Settings
from power.unit import Service, launchd_plist, program, service_env, stop_limit_s, systemd_unit
from tests.support.cli import power_cli
from tests.support.server import power_server
from tests.support.systemd import verify


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's, and its ``$NOTIFY_SOCKET`` (abstract)."""
    name = f"@a3s-power-test-{os.getpid()}-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name[1:])
        sock.settimeout(30)
        yield sock, name


power = power_cli


def test_a_stopping_daemon_extends_systemds_deadline_to_its_configuration(
    clean_env: dict[str, str], tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, name = notify_socket
    home = Path(clean_env["A3S_POWER_HOME"])
    home.mkdir()
    (home / "config.toml").write_text("shutdown_grace_s = 120\n")  # raised after an install
    env = dict(clean_env, NOTIFY_SOCKET=name, A3S_POWER_RUNNER_ENGINE="fake:echo")
    with power_server(env, tmp_path / "server.log") as server:
        assert server.stop() == 0
    needed_s = stop_timeout_s(Settings(shutdown_grace_s=120))
    assert needed_s > 120
    message = sock.recv(4096).decode()
    assert message == f"STOPPING=1\nEXTEND_TIMEOUT_USEC={math.ceil(needed_s * 1e6)}"


def test_without_a_notify_socket_nothing_is_sent(tmp_path: Path) -> None:
    assert daemon.notify_stopping(30.0, {}) is False
    assert daemon.notify_stopping(30.0, {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_an_endless_stop_asks_for_no_deadline(notify_socket: tuple[socket.socket, str]) -> None:
    sock, name = notify_socket
    assert daemon.notify_stopping(math.inf, {"NOTIFY_SOCKET": name}) is True
    assert sock.recv(4096) == f"STOPPING=1\nEXTEND_TIMEOUT_USEC={2**64 - 2}".encode()


def settings_service(settings: Settings) -> Service:
    return Service(program(), service_env({}), stop_timeout_s(settings), Path("/srv/power"))


def test_the_unit_lets_the_daemon_extend_its_stop_and_systemd_accepts_it(tmp_path: Path) -> None:
    unit = systemd_unit(settings_service(Settings()), "user")
    assert "NotifyAccess=main" in unit.splitlines()
    assert stop_limit_s("systemd", unit.encode()) is None  # the daemon can extend it
    done = verify(unit, tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_an_infinite_grace_is_no_limit_for_either_manager(tmp_path: Path) -> None:
    for settings in (
        Settings(shutdown_grace_s=math.inf),
        Settings(shutdown_grace_s=1e308, runner_stop_grace_s=1e308),  # sums to inf
        Settings(shutdown_grace_s=1e300),
    ):
        svc = settings_service(settings)
        unit = systemd_unit(svc, "system")
        assert "TimeoutStopSec=infinity" in unit.splitlines()
        done = verify(unit, tmp_path)
        assert (done.returncode, done.stderr) == (0, "")
        assert plistlib.loads(launchd_plist(svc))["ExitTimeOut"] == 0  # launchd: no limit


def test_install_survives_an_infinite_grace(clean_env: dict[str, str], tmp_path: Path) -> None:
    home = Path(clean_env["A3S_POWER_HOME"])
    home.mkdir()
    (home / "config.toml").write_text("shutdown_grace_s = inf\n")
    env = dict(clean_env, HOME=str(tmp_path / "user"), PATH="/usr/bin:/bin")
    done = power(env, "service", "install", "--print")
    assert done.returncode == 0, done.stderr
    assert "TimeoutStopSec=infinity" in done.stdout.splitlines()


def test_install_writes_absolute_paths(clean_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(
        clean_env,
        HOME=str(tmp_path / "user"),
        PATH="/usr/bin:/bin",
        OLLAMA_MODELS="models",
        OLLAMA_TMPDIR=" '~/tmp' ",
        A3S_POWER_LOG_FILE="logs/power.log",
    )
    work = tmp_path / "work"
    work.mkdir()
    done = power(env, "service", "install", "--print", cwd=work)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"Environment=OLLAMA_MODELS={work / 'models'}" in lines
    assert f"Environment=OLLAMA_TMPDIR={tmp_path / 'user' / 'tmp'}" in lines
    assert f"Environment=A3S_POWER_LOG_FILE={work / 'logs' / 'power.log'}" in lines


def test_status_says_when_an_older_units_stop_time_falls_short(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(clean_env, HOME=str(tmp_path / "user"), PATH="/usr/bin:/bin")
    env.pop("XDG_CONFIG_HOME", None)
    unit = tmp_path / "user/.config/systemd/user/a3s-power.service"
    unit.parent.mkdir(parents=True)
    # what an install before the daemon could extend its stop wrote
    old = systemd_unit(settings_service(Settings()), "user").replace("NotifyAccess=main\n", "")
    unit.write_text(old)
    assert stop_limit_s("systemd", old.encode()) == math.ceil(stop_timeout_s(Settings()))
    home = Path(env["A3S_POWER_HOME"])
    home.mkdir()
    assert "Note:" not in power(env, "service", "status").stdout
    (home / "config.toml").write_text("shutdown_grace_s = 120\n")
    status = power(env, "service", "status")
    needed_s = stop_timeout_s(Settings(shutdown_grace_s=120))
    assert f"needs up to {needed_s:g}s to drain: run power service install again" in status.stdout


def test_a_plists_limit_is_read_as_launchd_applies_it() -> None:
    svc = settings_service(Settings())
    assert stop_limit_s("launchd", launchd_plist(svc)) == math.ceil(svc.stop_timeout_s)
    endless = settings_service(Settings(shutdown_grace_s=math.inf))
    assert stop_limit_s("launchd", launchd_plist(endless)) == math.inf
    assert stop_limit_s("launchd", b"not a plist") is None
