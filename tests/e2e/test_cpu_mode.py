"""A runner whose CPU kernels crash on its first decode: one restart in CPU mode plain, kept.

The fake engine's ``kernel_fault`` dies of SIGSEGV in its first decode, as llama.cpp's AMX
kernels do on Sapphire Rapids, unless the model was loaded in CPU mode ``plain``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from tests.support.server import Server, power_server

FALLBACK = "died of SIGSEGV in its first decode"


def _serve(env: dict[str, str], tmp_path: Path, engine: str) -> AbstractContextManager[Server]:
    return power_server(dict(env, A3S_POWER_RUNNER_ENGINE=engine), tmp_path / "server.log")


@pytest.fixture
def faulty(server_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    with _serve(server_env, tmp_path, "fake:echo?kernel_fault=1") as server:
        yield server


def _generate(server: Server, prompt: str) -> httpx.Response:
    body = {"model": "smollm2", "prompt": prompt, "raw": True, "stream": False}
    return httpx.post(f"{server.url}/api/generate", json=body, timeout=60)


def _ps(server: Server) -> list[dict[str, object]]:
    models: list[dict[str, object]] = httpx.get(f"{server.url}/api/ps").json()["models"]
    return models


def test_a_kernel_crash_in_the_first_decode_is_retried_once_in_plain_mode_and_remembered(
    faulty: Server,
) -> None:
    resp = _generate(faulty, "why is the sky blue")
    assert resp.status_code == 200, resp.text
    assert resp.json()["response"] == "why is the sky blue "
    (model,) = _ps(faulty)
    assert model["cpu_mode"] == "plain"
    pid = model["pid"]
    again = _generate(faulty, "and the sea")  # the same plain runner: no second crash
    assert again.status_code == 200
    assert again.json()["response"] == "and the sea "
    # After an unload the model loads in plain mode again: the daemon remembers.
    assert httpx.post(f"{faulty.url}/api/generate", json={"model": "smollm2", "keep_alive": 0})
    third = _generate(faulty, "once more")
    assert third.status_code == 200
    (model,) = _ps(faulty)
    assert model["pid"] != pid
    assert model["cpu_mode"] == "plain"
    faulty.stop()
    log = faulty.log_text()
    assert log.count(FALLBACK) == 1, log
    line = next(x for x in log.splitlines() if FALLBACK in x)
    (auto,) = re.findall(r"models load in CPU mode (\S+) \(cpu_extra_buffers = auto", log)
    assert auto != "plain"  # extra here; no-amx on a CPU with AMX
    assert f"in its first decode in CPU mode {auto};" in line
    assert f"bad CPU kernel in mode {auto}" in line  # the runner's last stderr line


def test_a_model_whose_plain_runner_crashes_too_gets_the_crash_error(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    with _serve(server_env, tmp_path, "fake:echo?kernel_fault=2") as server:
        resp = _generate(server, "why is the sky blue")
        assert resp.status_code == 500
        assert "killed by SIGSEGV" in resp.json()["error"]
        assert "bad CPU kernel in mode plain" in resp.json()["error"]
        assert server.proc.poll() is None
        assert server.log_text().count(FALLBACK) == 1


def test_with_extra_buffers_off_nothing_crashes_and_ps_shows_no_mode(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(server_env, A3S_POWER_CPU_EXTRA_BUFFERS="off")
    with _serve(env, tmp_path, "fake:echo?kernel_fault=1") as server:
        resp = _generate(server, "hello there")
        assert resp.status_code == 200
        (model,) = _ps(server)
        assert "cpu_mode" not in model  # plain is this daemon's default
        server.stop()
        log = server.log_text()
        assert FALLBACK not in log
        assert "models load in CPU mode plain (cpu_extra_buffers = off)" in log


def test_an_unknown_cpu_extra_buffers_value_stops_the_start(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(server_env, A3S_POWER_CPU_EXTRA_BUFFERS="sometimes")
    with pytest.raises(AssertionError, match="A3S_POWER_CPU_EXTRA_BUFFERS: 'sometimes'"):
        with power_server(env, tmp_path / "log"):
            pass
