"""`power service`: install Power as a systemd or launchd service, and control the daemon.

``install``/``uninstall``/``status`` manage the service file (`power.unit` writes it) and, when
the service manager answers (``systemctl``, ``launchctl``), enable or disable it; otherwise they
say what to run. ``stop`` stops the daemons recorded under the data folder (`power.daemon`),
whoever started them: SIGTERM, so each drains and stops its runners, then waits for them to
exit. Unlike the other commands these act on this machine, not through the HTTP API.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

if TYPE_CHECKING:
    from power.settings import Settings
    from power.unit import ManagerName, Scope

__all__ = ["service"]

_PROBE_TIMEOUT_S = 10.0


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _settings() -> Settings:
    from power.config import load_settings
    from power.settings import ConfigError

    try:
        return load_settings(path=None, env=os.environ, cli={})
    except ConfigError as exc:
        _fail(str(exc), 2)


@dataclass(frozen=True)
class _Manager:
    """This platform's service manager, and the commands that drive it for one scope."""

    name: ManagerName
    scope: Scope
    path: Path

    @property
    def _systemctl(self) -> list[str]:
        return ["systemctl", "--user"] if self.scope == "user" else ["systemctl"]

    @property
    def _domain(self) -> str:
        return f"gui/{os.getuid()}" if self.scope == "user" else "system"

    def probe(self) -> list[str]:
        """A command that succeeds when the manager answers."""
        if self.name == "systemd":
            return [*self._systemctl, "show-environment"]
        return ["launchctl", "print", self._domain]

    def enable(self) -> list[list[str]]:
        if self.name == "systemd":
            return [[*self._systemctl, "daemon-reload"], [*self._systemctl, "enable", "--now",
                                                          _unit_name()]]  # fmt: skip
        return [["launchctl", "bootstrap", self._domain, str(self.path)]]

    def disable(self) -> list[list[str]]:
        if self.name == "systemd":
            return [[*self._systemctl, "disable", "--now", _unit_name()]]
        return [["launchctl", "bootout", f"{self._domain}/{_label()}"]]

    def reload(self) -> list[list[str]]:
        return [[*self._systemctl, "daemon-reload"]] if self.name == "systemd" else []

    def state(self) -> list[str]:
        if self.name == "systemd":
            return [*self._systemctl, "is-active", _unit_name()]
        return ["launchctl", "print", f"{self._domain}/{_label()}"]

    def answers(self) -> bool:
        command = self.probe()
        if shutil.which(command[0]) is None:
            return False
        return _run(command, quiet=True).returncode == 0


def _unit_name() -> str:
    from power.unit import UNIT_NAME

    return UNIT_NAME


def _label() -> str:
    from power.unit import LAUNCHD_LABEL

    return LAUNCHD_LABEL


def _manager(user: bool) -> _Manager:
    from power.unit import unit_path

    scope: Scope = "user" if user else "system"
    name: ManagerName = "launchd" if sys.platform == "darwin" else "systemd"
    return _Manager(name, scope, unit_path(name, scope, os.environ))


def _run(command: Sequence[str], *, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(command), capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        if not quiet:
            click.echo(f"{shlex.join(command)}: {exc}", err=True)
        return subprocess.CompletedProcess(list(command), 1, "", str(exc))


def _run_all(commands: Sequence[Sequence[str]]) -> None:
    for command in commands:
        done = _run(command)
        if done.returncode != 0:
            _fail(f"{shlex.join(command)} failed: {(done.stderr or done.stdout).strip()}")


def _tell(manager: _Manager, commands: Sequence[Sequence[str]], what: str) -> None:
    tool = "systemctl" if manager.name == "systemd" else "launchctl"
    click.echo(f"{tool} does not answer here; to {what}, run:")
    for command in commands:
        click.echo(f"  {shlex.join(command)}")


def _need_root(manager: _Manager, user: bool) -> None:
    if not user and os.geteuid() != 0:
        _fail(f"--system writes {manager.path}, which needs root: run it with sudo")


_scope_option = click.option(
    "--user/--system",
    "user",
    default=True,
    help="This user's service manager (default) or the system's (needs root).",
)


@click.group()
def service() -> None:
    """Install Power as a service (systemd, launchd); stop the running daemon."""


@service.command()
@_scope_option
@click.option("--print", "print_", is_flag=True, help="Show the file instead of writing it.")
def install(user: bool, print_: bool) -> None:
    """Run this installation's `power serve` as a service, with this environment's settings."""
    from power import daemon
    from power.serve import stop_timeout_s
    from power.unit import Service, launchd_plist, program, service_env, systemd_unit

    settings = _settings()
    manager = _manager(user)
    env = service_env(os.environ)
    svc = Service(program(), env, stop_timeout_s(settings), Path(settings.home))
    if manager.name == "systemd":
        content = systemd_unit(svc, manager.scope).encode()
    else:
        content = launchd_plist(svc)
    if print_:
        click.echo(content.decode(), nl=False)
        return
    _need_root(manager, user)
    manager.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = manager.path.with_name(f".{manager.path.name}.tmp")
    tmp.write_bytes(content)
    tmp.chmod(0o600 if svc.secret else 0o644)  # the environment may hold keys
    tmp.replace(manager.path)
    click.echo(f"wrote {manager.path}")
    running = daemon.running(Path(settings.home))
    if running is not None:
        click.echo(
            f"Note: a Power daemon (pid {running.pid}) already runs on this data folder; "
            "the service cannot listen until it stops: power service stop"
        )
    if manager.answers():
        _run_all(manager.enable())
        click.echo(f"enabled and started {manager.path.name} ({manager.name}, {manager.scope})")
    else:
        _tell(manager, manager.enable(), "enable and start it")


@service.command()
@_scope_option
def uninstall(user: bool) -> None:
    """Stop and remove the service installed by `power service install`."""
    manager = _manager(user)
    if not manager.path.exists():
        click.echo(f"no service is installed ({manager.path} does not exist)")
        return
    _need_root(manager, user)
    if manager.answers():
        _run_all(manager.disable())
        manager.path.unlink()
        _run_all(manager.reload())
        click.echo(f"stopped, disabled and removed {manager.path}")
    else:
        manager.path.unlink()
        click.echo(f"removed {manager.path}")
        _tell(manager, [*manager.disable(), *manager.reload()], "stop the service")


@service.command()
@_scope_option
def status(user: bool) -> None:
    """Whether the service is installed and running, and which daemons the data folder records."""
    from power import daemon
    from power.serve import stop_timeout_s
    from power.unit import stop_limit_s

    settings = _settings()
    manager = _manager(user)
    if manager.path.exists():
        click.echo(f"service: installed at {manager.path} ({manager.name}, {manager.scope})")
        if manager.answers():
            done = _run(manager.state())
            state = (done.stdout.strip().splitlines() or ["unknown"])[0]
            click.echo(f"state: {state}")
        try:
            limit_s = stop_limit_s(manager.name, manager.path.read_bytes())
        except OSError:
            limit_s = None
        needed_s = stop_timeout_s(settings)
        if limit_s is not None and limit_s < needed_s:
            click.echo(
                f"Note: the service is killed {limit_s:g}s into a stop, but this configuration"
                f" needs up to {needed_s:g}s to drain: run power service install again"
            )
    else:
        click.echo(f"service: not installed ({manager.name}, {manager.scope})")
    home = Path(settings.home)
    running = daemon.all_running(home)
    if not running:
        click.echo(f"daemon: none running on {home}")
    for found in running:
        click.echo(f"daemon: pid {found.pid} on {home}")


@service.command()
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds to wait for it to exit (default: the drain grace plus the runner stop ladder).",
)
def stop(timeout_s: float | None) -> None:
    """Stop the daemons running on this data folder gracefully (SIGTERM: they drain first)."""
    from power import daemon
    from power.serve import stop_timeout_s

    settings = _settings()
    home = Path(settings.home)
    running = daemon.all_running(home)
    if not running:
        _fail(f"no Power daemon is running on {home}")
    wait_s = stop_timeout_s(settings) if timeout_s is None else timeout_s
    pids = ", ".join(str(d.pid) for d in running)
    what = f"daemon (pid {pids})" if len(running) == 1 else f"daemons (pids {pids})"
    click.echo(f"stopping the Power {what}; waiting up to {wait_s:g}s")
    denied, signalled = [], []
    for found in running:
        try:
            if daemon.terminate(found):
                signalled.append(found)
        except PermissionError:
            denied.append(found)
    left = daemon.wait_exited(signalled, wait_s)
    if denied:
        _fail(f"not allowed to stop pid {denied[0].pid} (another user's daemon?)")
    if left:
        _fail(f"pid {', '.join(str(d.pid) for d in left)} is still stopping after {wait_s:g}s")
    click.echo("stopped")
