"""``power serve`` with the product description's own config.toml, and with bad ones."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from power import daemon
from tests.support.net import free_port
from tests.support.seed import SEED_CONFIG
from tests.support.server import power_server


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AssertionError(f"{key} missing")


def test_the_seed_config_starts_the_server_and_its_keys_reach_the_load(
    server_env: dict[str, str], tmp_path: Path, smollm2_gguf: Path
) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if os.geteuid() != 0 and soft != resource.RLIM_INFINITY:
        pytest.skip("RLIMIT_MEMLOCK is too small to lock the model for this user")
    # the seed's place for config.toml: ~/.a3s/power, whose data_dir applies (A3S_POWER_HOME,
    # were it set, would win over it, as the environment wins over config.toml everywhere)
    env = {k: v for k, v in server_env.items() if k != "A3S_POWER_HOME"}
    env["HOME"] = str(tmp_path / "user")
    config = tmp_path / "user" / ".a3s" / "power" / "config.toml"
    config.parent.mkdir(parents=True)
    data = tmp_path / "data"
    extra = f'data_dir = "{data}"\nuse_mlock = true\nnum_thread = 1\n'
    config.write_text(extra + SEED_CONFIG)
    with power_server(env, tmp_path / "server.log") as server:
        recorded = daemon.running(data)  # data_dir is the data folder
        assert recorded is not None
        assert recorded.pid == server.proc.pid
        body = {
            "model": "smollm2",
            "prompt": "The sky is",
            "raw": True,
            "stream": False,
            "options": {"temperature": 0, "num_predict": 4},
        }
        r = httpx.post(f"{server.url}/api/generate", json=body, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["eval_count"] == 4
        locked = [pid for pid in server.runner_pids() if _status_kib(pid, "VmLck") > 0]
        # use_mlock reached llama.cpp: the runner holds the weights locked in memory
        assert len(locked) == 1
        assert _status_kib(locked[0], "VmLck") * 1024 >= smollm2_gguf.stat().st_size * 0.9
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[gpu]\nlayers = 1\n", "unknown key 'gpu.layers'"),
        ("use_mlock = 'sometimes'\n", "key 'use_mlock': Expected `bool`, got `str`"),
        ("[gpu]\nmain_gpu = -3\n", "key 'gpu.main_gpu': Expected `int` >= -1"),
        ("keep_alive = 'soon'\n", "key 'keep_alive': time: invalid duration"),
        ("port = \n", "Invalid value (at line 1, column 8)"),
    ],
)
def test_a_bad_config_is_one_error_line_and_exit_2(
    clean_env: dict[str, str], text: str, message: str
) -> None:
    home = Path(clean_env["A3S_POWER_HOME"])
    home.mkdir(parents=True)
    config = home / "config.toml"
    config.write_text(text)
    for args in (["serve", "--port", str(free_port())], ["service", "stop"]):
        done = subprocess.run(
            [sys.executable, "-m", "power", *args],
            env=clean_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"Error: {config}: ")
        assert message in done.stderr
        assert done.stderr.count("\n") == 1


def test_a_data_dir_that_cannot_be_made_is_one_error_line(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in clean_env.items() if k != "A3S_POWER_HOME"}
    env["HOME"] = str(tmp_path / "user")
    config = tmp_path / "user" / ".a3s" / "power" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('data_dir = "/proc/no-such-folder"\n')
    done = subprocess.run(
        [sys.executable, "-m", "power", "serve", "--port", str(free_port())],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "Error: cannot create the data folder /proc/no-such-folder (data_dir, A3S_POWER_HOME or"
        " OLLAMA_MODELS): No such file or directory\n"
    )
