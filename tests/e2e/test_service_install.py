"""``power service install|status|uninstall`` as a user runs them.

The service manager is the one thing that cannot run here (no systemd as pid 1), so
``systemctl`` is a stand-in script on ``PATH`` that records its arguments: the seam is the
process boundary, as it is for the real one. Without any ``systemctl`` the commands say what to
run instead.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import power_cli
from tests.support.systemd import verify

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> {log}
case "$*" in *is-active*) echo active;; esac
exit 0
"""


@pytest.fixture
def env(clean_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = dict(clean_env, HOME=str(tmp_path / "user"), PATH=str(bin_dir))
    env.pop("XDG_CONFIG_HOME", None)
    env["OLLAMA_KEEP_ALIVE"] = "10m"
    return env


@pytest.fixture
def systemctl_log(env: dict[str, str], tmp_path: Path) -> Path:
    log = tmp_path / "systemctl.log"
    script = Path(env["PATH"]) / "systemctl"
    script.write_text(FAKE_SYSTEMCTL.format(log=log))
    script.chmod(0o755)
    return log


def power(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return power_cli(env, "service", *args)


def unit_file(env: dict[str, str]) -> Path:
    return Path(env["HOME"]) / ".config/systemd/user/a3s-power.service"


def test_install_status_uninstall_with_systemctl(
    env: dict[str, str], systemctl_log: Path, tmp_path: Path
) -> None:
    printed = power(env, "install", "--print")
    assert printed.returncode == 0, printed.stderr
    assert not unit_file(env).exists()  # --print writes nothing

    done = power(env, "install")
    assert done.returncode == 0, done.stderr
    path = unit_file(env)
    assert done.stdout.splitlines()[0] == f"wrote {path}"
    assert path.read_text() == printed.stdout
    assert "Environment=OLLAMA_KEEP_ALIVE=10m" in path.read_text().splitlines()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    checked = verify(path.read_text(), tmp_path)
    assert (checked.returncode, checked.stderr) == (0, "")
    assert systemctl_log.read_text().splitlines() == [
        "--user show-environment",
        "--user daemon-reload",
        "--user enable --now a3s-power.service",
    ]

    status = power(env, "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[:2] == [
        f"service: installed at {path} (systemd, user)",
        "state: active",
    ]

    systemctl_log.write_text("")
    gone = power(env, "uninstall")
    assert gone.returncode == 0, gone.stderr
    assert not path.exists()
    assert systemctl_log.read_text().splitlines() == [
        "--user show-environment",
        "--user disable --now a3s-power.service",
        "--user daemon-reload",
    ]
    again = power(env, "uninstall")
    assert again.stdout == f"no service is installed ({path} does not exist)\n"


def test_without_systemctl_install_says_what_to_run(env: dict[str, str]) -> None:
    done = power(env, "install")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        "systemctl does not answer here; to enable and start it, run:",
        "  systemctl --user daemon-reload",
        "  systemctl --user enable --now a3s-power.service",
    ]
    assert unit_file(env).exists()
    status = power(env, "status")
    assert (
        status.stdout.splitlines()[0] == f"service: installed at {unit_file(env)} (systemd, user)"
    )
    gone = power(env, "uninstall")
    assert gone.stdout.splitlines() == [
        f"removed {unit_file(env)}",
        "systemctl does not answer here; to stop the service, run:",
        "  systemctl --user disable --now a3s-power.service",
        "  systemctl --user daemon-reload",
    ]


def test_keys_in_the_environment_make_the_unit_private(
    env: dict[str, str], systemctl_log: Path
) -> None:
    done = power(dict(env, A3S_POWER_API_KEYS="k-123"), "install")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(unit_file(env).stat().st_mode) == 0o600


def test_system_scope(env: dict[str, str]) -> None:
    printed = power(env, "install", "--system", "--print")
    assert printed.returncode == 0, printed.stderr
    assert "WantedBy=multi-user.target" in printed.stdout.splitlines()
    if os.geteuid() != 0:
        done = power(env, "install", "--system")
        assert done.returncode == 1
        assert done.stderr == (
            "Error: --system writes /etc/systemd/system/a3s-power.service, which needs root:"
            " run it with sudo\n"
        )
