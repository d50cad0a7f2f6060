"""Service manager files for ``power service``: a systemd unit (Linux), a launchd plist (macOS).

Both run this installation's ``power serve`` (the interpreter running now, ``-m power serve``,
so a virtual environment works without being activated) with the settings of the environment
that installs it: every ``A3S_POWER_*`` and ``OLLAMA_*`` variable, the proxy variables the
registry client honours, and ``CUDA_VISIBLE_DEVICES``. The paths among them (``A3S_POWER_HOME``,
``OLLAMA_MODELS``, ``OLLAMA_TMPDIR``, ``A3S_POWER_LOG_FILE``) are made absolute, as the daemon
would read them here: a service starts in ``/`` or the user's home, not where install ran.
Without ``A3S_POWER_HOME`` the service reads ``~/.a3s/power/config.toml`` of the user it runs as
(root for ``--system``), whose ``data_dir`` then applies as it does for ``power serve``.

Both restart the daemon when it fails (not after a clean stop, nor for exit status 2, a bad
configuration that a restart cannot fix), stop it with SIGTERM sent to the gateway alone (it
drains, then stops its runners itself; systemd's ``KillMode=mixed``), and wait
`power.serve.stop_timeout_s` before killing what is left (no limit when that is infinite).

That wait is the configuration's at install time, and config.toml may raise it later. Under
systemd it is only a floor: the unit lets the daemon's own process notify systemd
(``NotifyAccess=main``), and once stopping the daemon extends the deadline to what its
configuration needs (`power.daemon.notify_stopping`). launchd has no such message, so there
`stop_limit_s` lets ``power service status`` say when the plist's limit has fallen short.
launchd has no journal either, so there the daemon logs to ``<home>/logs/server.log``, rotated
like ``power run``'s background daemon.
"""

from __future__ import annotations

import math
import os
import plistlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.parsers.expat import ExpatError

from power.location import HOME_VAR, home_dir, trim_env

__all__ = [
    "LAUNCHD_LABEL",
    "UNIT_NAME",
    "ManagerName",
    "Scope",
    "Service",
    "launchd_plist",
    "program",
    "service_env",
    "stop_limit_s",
    "systemd_unit",
    "unit_path",
]

Scope = Literal["user", "system"]
ManagerName = Literal["systemd", "launchd"]

UNIT_NAME = "a3s-power.service"
LAUNCHD_LABEL = "com.a3s.power"
LOG_FILE_VAR = "A3S_POWER_LOG_FILE"
_PREFIXES = ("A3S_POWER_", "OLLAMA_")
_PASSED = frozenset(
    {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
     "CUDA_VISIBLE_DEVICES"}
)  # fmt: skip
_SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSW", re.IGNORECASE)
_CREDENTIALS_IN_URL = re.compile(r"://[^/@\s]+:[^/@\s]*@")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
# Exit status 2 is a bad setting: restarting cannot help (power.cli.serve).
_NO_RESTART_STATUS = 2
_RESTART_S = 3
# paths a service would otherwise resolve against its own working directory
_PATH_VARS = ("OLLAMA_MODELS", "OLLAMA_TMPDIR", LOG_FILE_VAR)
_MAX_STOP_S = 1e9  # about 30 years: any longer is no limit
_SYSTEMD_DEFAULT_STOP_S = 90.0  # DefaultTimeoutStopSec
_LAUNCHD_DEFAULT_STOP_S = 20  # launchd's ExitTimeOut when a plist sets none


@dataclass(frozen=True)
class Service:
    """What a service manager runs: the command, its environment, how long a stop may take."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    stop_timeout_s: float
    home: Path  # the data folder (`Settings.home`): launchd's log goes under it

    @property
    def secret(self) -> bool:
        """True when the environment carries something to keep from other users' eyes."""
        return any(
            _SECRET.search(name) or _CREDENTIALS_IN_URL.search(value)
            for name, value in self.env.items()
        )


def program() -> tuple[str, ...]:
    """This installation's ``power serve``: the running interpreter (not resolved: a virtual
    environment's ``python`` is a link that must stay one) and ``-m power serve``."""
    return (os.path.abspath(sys.executable), "-m", "power", "serve")


def service_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables a service passes on; the paths among them (when set) made absolute."""
    env = {
        name: value
        for name, value in sorted(environ.items())
        if name.startswith(_PREFIXES) or name in _PASSED
    }
    if trim_env(env.get(HOME_VAR, "")):
        env[HOME_VAR] = str(home_dir(trim_env(env[HOME_VAR])).absolute())
    for name in _PATH_VARS:
        if text := trim_env(env.get(name, "")):
            env[name] = str(Path(text).expanduser().absolute())
    return env


def _stop_seconds(stop_s: float) -> int | None:
    """``stop_s`` in whole seconds for a service manager; None for no limit (infinite, or past
    what any manager takes: a grace of 1e308 means forever, not an overflow)."""
    if not math.isfinite(stop_s) or stop_s > _MAX_STOP_S:
        return None
    return math.ceil(stop_s)


def stop_limit_s(manager: ManagerName, content: bytes) -> float | None:
    """How long the service file ``content`` lets a stop take before the kill, when the daemon
    cannot extend it (a unit without ``NotifyAccess=``, written by an older install, or a
    plist); None when it can, or when the file cannot be read."""
    if manager == "launchd":
        try:
            timeout = plistlib.loads(content).get("ExitTimeOut", _LAUNCHD_DEFAULT_STOP_S)
        except (ValueError, AttributeError, ExpatError):
            return None
        return float(timeout) if isinstance(timeout, int) and timeout > 0 else math.inf
    limit: float = _SYSTEMD_DEFAULT_STOP_S
    for line in content.decode(errors="replace").splitlines():
        key, _, value = line.strip().partition("=")
        if key == "NotifyAccess" and value.strip() in ("main", "all", "exec"):
            return None
        if key in ("TimeoutStopSec", "TimeoutSec"):
            value = value.strip()
            if value == "infinity":
                limit = math.inf
            elif value.isdigit():
                limit = float(value)
            else:
                return None  # (a time span with units: leave it to systemd)
    return limit


def unit_path(manager: ManagerName, scope: Scope, env: Mapping[str, str]) -> Path:
    """Where the unit or plist goes for ``scope``."""
    home = Path(env.get("HOME") or Path.home())
    if manager == "launchd":
        folder = (
            home / "Library/LaunchAgents" if scope == "user" else Path("/Library/LaunchDaemons")
        )
        return folder / f"{LAUNCHD_LABEL}.plist"
    if scope == "system":
        return Path("/etc/systemd/system") / UNIT_NAME
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return config / "systemd/user" / UNIT_NAME


# -- systemd -----------------------------------------------------------------------------


def _systemd_quote(word: str, *, exec_line: bool) -> str:
    """One word as systemd reads it: ``%`` is a specifier (and ``$`` a variable on Exec lines),
    so both are doubled; anything but a plain word is double-quoted with C escapes."""
    word = word.replace("%", "%%")
    if exec_line:
        word = word.replace("$", "$$")
    if _PLAIN_WORD.fullmatch(word):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def systemd_unit(service: Service, scope: Scope) -> str:
    """The ``a3s-power.service`` unit for a user's systemd (``--user``) or the system's."""
    exec_start = " ".join(_systemd_quote(word, exec_line=True) for word in service.argv)
    stop_s = _stop_seconds(service.stop_timeout_s)
    lines = [
        "# Written by `power service install`; `power service uninstall` removes it.",
        "[Unit]",
        "Description=A3S Power (Ollama-compatible model server)",
    ]
    if scope == "system":  # a user's manager has no network targets
        lines += ["Wants=network-online.target", "After=network-online.target"]
    lines += [
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={exec_start}",
        *(
            f"Environment={_systemd_quote(f'{name}={value}', exec_line=False)}"
            for name, value in service.env.items()
        ),
        "Restart=on-failure",
        f"RestartSec={_RESTART_S}",
        f"RestartPreventExitStatus={_NO_RESTART_STATUS}",
        "# SIGTERM to the gateway alone: it drains, then stops its runners; then SIGKILL to all",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        "# the stop time of the configuration now; once stopping, the daemon extends it to what",
        "# its configuration then needs (EXTEND_TIMEOUT_USEC), so config.toml may raise it later",
        f"TimeoutStopSec={'infinity' if stop_s is None else stop_s}",
        "NotifyAccess=main",
        "",
        "[Install]",
        f"WantedBy={'default.target' if scope == 'user' else 'multi-user.target'}",
    ]
    return "\n".join(lines) + "\n"


# -- launchd -----------------------------------------------------------------------------


def launchd_plist(service: Service) -> bytes:
    """The ``com.a3s.power`` plist (a LaunchAgent for a user, a LaunchDaemon for the system)."""
    env = dict(service.env)
    exit_s = _stop_seconds(service.stop_timeout_s)
    log_file = env.setdefault(LOG_FILE_VAR, str(service.home / "logs" / "server.log"))
    plist = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(service.argv),
        "EnvironmentVariables": env,
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # relaunch after a failure, not a clean stop
        # SIGTERM, then SIGKILL after this (0: never)
        "ExitTimeOut": 0 if exit_s is None else exit_s,
        # what is printed before logging is set up (a bad config.toml); then the rotated file
        "StandardOutPath": log_file,
        "StandardErrorPath": log_file,
    }
    return plistlib.dumps(plist)
