"""The service files `power service install` writes: systemd accepts the unit, plistlib reads
the plist, and both run this installation's ``power serve`` with this environment's settings.

``systemd-analyze verify`` is Debian's ``systemd`` package (``apt-get install systemd``).
"""

from __future__ import annotations

import plistlib
import sys
from pathlib import Path

import pytest

from power.serve import stop_timeout_s
from power.settings import Settings
from power.unit import (
    LAUNCHD_LABEL,
    UNIT_NAME,
    Service,
    launchd_plist,
    program,
    service_env,
    systemd_unit,
    unit_path,
)
from tests.support.systemd import verify


def service(env: dict[str, str] | None = None) -> Service:
    environ = {"A3S_POWER_HOME": "/srv/power", **(env or {})}
    return Service(program(), service_env(environ), stop_timeout_s(Settings()), Path("/srv/power"))


@pytest.mark.parametrize("scope", ["user", "system"])
def test_systemd_accepts_the_unit(scope: str, tmp_path: Path) -> None:
    unit = systemd_unit(service({"OLLAMA_KEEP_ALIVE": "10m"}), scope)  # type: ignore[arg-type]
    done = verify(unit, tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_systemd_rejects_what_verify_would_catch(tmp_path: Path) -> None:
    """The check above has teeth: a unit with an unknown key or a missing program is reported."""
    done = verify("[Service]\nExecStart=/nonexistent/power serve\nRestartt=always\n", tmp_path)
    assert "Unknown key 'Restartt'" in done.stderr
    assert "/nonexistent/power is not executable" in done.stderr


def test_the_unit_runs_this_power_serve_with_the_environment() -> None:
    env = {"OLLAMA_HOST": "0.0.0.0:8080", "A3S_POWER_LOG_FORMAT": "json", "PATH": "/bin"}
    unit = systemd_unit(service(env), "user")
    lines = unit.splitlines()
    assert f"ExecStart={sys.executable} -m power serve" in lines
    assert "Environment=OLLAMA_HOST=0.0.0.0:8080" in lines
    assert "Environment=A3S_POWER_LOG_FORMAT=json" in lines
    assert "Environment=A3S_POWER_HOME=/srv/power" in lines
    assert not any("PATH=" in line for line in lines)
    assert "WantedBy=default.target" in lines


def test_the_unit_restarts_on_failure_and_outwaits_the_drain() -> None:
    settings = Settings(shutdown_grace_s=60, runner_stop_grace_s=5, runner_term_grace_s=5)
    svc = Service(program(), service_env({}), stop_timeout_s(settings), Path("/srv/power"))
    lines = systemd_unit(svc, "system").splitlines()
    assert {"Restart=on-failure", "KillSignal=SIGTERM", "KillMode=mixed"} <= set(lines)
    assert "RestartPreventExitStatus=2" in lines  # a bad config.toml: restarting cannot help
    timeout = next(int(x.split("=")[1]) for x in lines if x.startswith("TimeoutStopSec="))
    assert timeout > settings.shutdown_grace_s + 5 + 5
    assert "WantedBy=multi-user.target" in lines
    assert "After=network-online.target" in lines


def test_values_are_quoted_for_systemd() -> None:
    env = {"OLLAMA_ORIGINS": 'http://a b,"c"', "A3S_POWER_X": "100%$HOME\\n"}
    unit = systemd_unit(service(env), "user")
    assert 'Environment="OLLAMA_ORIGINS=http://a b,\\"c\\""' in unit
    # % is a specifier in every value; $ expands only on Exec lines, so it stays single here
    assert 'Environment="A3S_POWER_X=100%%$HOME\\\\n"' in unit
    argv = ("/opt/my power/bin/python", "-m", "power", "serve")
    svc = Service(argv, service_env({}), 30.0, Path("/srv/power"))
    assert 'ExecStart="/opt/my power/bin/python" -m power serve' in systemd_unit(svc, "user")


def test_the_environment_passed_on() -> None:
    environ = {
        "OLLAMA_MODELS": "/m",
        "A3S_POWER_RUNNER_ENGINE": "llama",
        "HTTPS_PROXY": "http://proxy:3128",
        "no_proxy": "localhost",
        "CUDA_VISIBLE_DEVICES": "1",
        "HOME": "/home/x",
        "LANG": "C",
    }
    env = service_env(environ)
    assert env == {
        "OLLAMA_MODELS": "/m",
        "A3S_POWER_RUNNER_ENGINE": "llama",
        "HTTPS_PROXY": "http://proxy:3128",
        "no_proxy": "localhost",
        "CUDA_VISIBLE_DEVICES": "1",
    }  # without A3S_POWER_HOME, the service's user's ~/.a3s/power (and its data_dir) apply
    relative = service_env({"A3S_POWER_HOME": " '~/power' "})
    assert relative == {"A3S_POWER_HOME": str(Path("~/power").expanduser().absolute())}


def test_secrets_make_the_file_private() -> None:
    assert not service().secret
    assert service({"A3S_POWER_API_KEYS": "k1"}).secret
    assert service({"HTTPS_PROXY": "http://user:pw@proxy:3128"}).secret


def test_the_plist_names_the_program_and_arguments() -> None:
    svc = service({"OLLAMA_HOST": "127.0.0.1:9999"})
    plist = plistlib.loads(launchd_plist(svc))
    assert plist["Label"] == LAUNCHD_LABEL
    assert plist["ProgramArguments"] == [sys.executable, "-m", "power", "serve"]
    assert plist["EnvironmentVariables"] == {
        "OLLAMA_HOST": "127.0.0.1:9999",
        "A3S_POWER_HOME": "/srv/power",
        "A3S_POWER_LOG_FILE": "/srv/power/logs/server.log",
    }
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["RunAtLoad"] is True
    assert plist["ExitTimeOut"] >= stop_timeout_s(Settings())
    assert plist["StandardErrorPath"] == "/srv/power/logs/server.log"


def test_a_log_file_of_ones_own_is_kept_in_the_plist() -> None:
    plist = plistlib.loads(launchd_plist(service({"A3S_POWER_LOG_FILE": "/var/log/p.log"})))
    assert plist["EnvironmentVariables"]["A3S_POWER_LOG_FILE"] == "/var/log/p.log"
    assert plist["StandardOutPath"] == "/var/log/p.log"


def test_where_the_files_go() -> None:
    env = {"HOME": "/home/ann"}
    assert unit_path("systemd", "user", env) == Path("/home/ann/.config/systemd/user", UNIT_NAME)
    assert unit_path("systemd", "user", {**env, "XDG_CONFIG_HOME": "/cfg"}) == Path(
        "/cfg/systemd/user", UNIT_NAME
    )
    assert unit_path("systemd", "system", env) == Path("/etc/systemd/system", UNIT_NAME)
    assert unit_path("launchd", "user", env) == Path(
        "/home/ann/Library/LaunchAgents/com.a3s.power.plist"
    )
    assert unit_path("launchd", "system", env) == Path("/Library/LaunchDaemons/com.a3s.power.plist")
