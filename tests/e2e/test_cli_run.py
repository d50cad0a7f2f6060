"""``power run`` and friends through the real console script, against ``power serve`` with
SmolLM2: piped input, flag parsing, output without a terminal, ``ps``, ``-v`` and ``help``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from power import __version__
from tests.support.server import Server

POWER = str(Path(sys.executable).with_name("power"))  # the console script


@pytest.fixture
def env(server: Server, server_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    body = {
        "model": "brief",
        "from": "smollm2",
        "stream": False,
        "parameters": {"num_predict": 6, "temperature": 0, "seed": 1},
    }
    resp = httpx.post(f"{server.url}/api/create", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    return dict(server_env, OLLAMA_HOST=server.url, A3S_POWER_HOME=str(tmp_path / "client"))


def power(
    env: dict[str, str], *args: str, stdin: str | Path = ""
) -> subprocess.CompletedProcess[str]:
    if isinstance(stdin, Path):
        with stdin.open() as f:
            return subprocess.run(
                [POWER, *args],
                env=env,
                stdin=f,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
    return subprocess.run(
        [POWER, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_piped_input_forms(env: dict[str, str], tmp_path: Path) -> None:
    piped = power(env, "run", "brief", stdin="Say hello\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip()
    assert piped.stdout.endswith("\n\n")
    assert "\x1b" not in piped.stdout + piped.stderr  # no spinner, no colours, no wrapping

    notes = tmp_path / "notes.txt"
    notes.write_text("The sky is blue because of Rayleigh scattering.\n")
    redirected = power(env, "run", "brief", stdin=notes)
    assert redirected.returncode == 0, redirected.stderr
    both = power(env, "run", "brief", "Summarise this:", stdin=notes)
    assert both.returncode == 0, both.stderr
    assert both.stdout.strip()


def test_think_is_a_flag_unless_given_a_value(env: dict[str, str]) -> None:
    # "why?" stays the prompt: the server refuses to think, it is not a bad --think value
    flag = power(env, "run", "brief", "--think", "why?")
    assert flag.returncode == 1
    assert flag.stderr == 'Error: "brief" does not support thinking\n'
    off = power(env, "run", "brief", "--think=false", "--hidethinking", "why?")
    assert off.returncode == 0, off.stderr
    bad = power(env, "run", "brief", "--think=maybe", "why?")
    assert bad.returncode == 2
    assert "Invalid value for --think: 'maybe'" in bad.stderr


def test_verbose_format_and_nowordwrap(env: dict[str, str]) -> None:
    done = power(env, "run", "brief", "--verbose", "--nowordwrap", "--format", "json", "Hi")
    assert done.returncode == 0, done.stderr
    assert done.stdout.lstrip().startswith("{")
    labels = [line.split(":")[0] for line in done.stderr.splitlines()]
    assert labels[:1] == ["total duration"]
    assert {"prompt eval count", "prompt eval rate", "eval count", "eval rate"} <= set(labels)


def test_keepalive_shows_in_ps(env: dict[str, str]) -> None:
    assert power(env, "run", "brief", "--keepalive=-1s").returncode == 0  # nothing to ask: loads
    rows = power(env, "ps").stdout.splitlines()
    assert rows[0].split()[:6] == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert "Forever" in rows[1]
    assert power(env, "run", "brief", "--keepalive", "10m").returncode == 0
    row = power(env, "ps").stdout.splitlines()[1]
    assert "minutes from now" in row
    assert "\x1b" not in row


def test_version_and_help(env: dict[str, str]) -> None:
    version = power(env, "-v")
    assert version.returncode == 0
    assert version.stdout == f"power version is {__version__}\n"
    helped = power(env, "help", "run")
    assert helped.returncode == 0
    assert helped.stdout == power(env, "run", "--help").stdout
