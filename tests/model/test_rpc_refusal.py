"""Without llama.cpp's RPC backend (the default llama-cpp-python build, which the default
sessions install), RPC is refused with what to install: a model with workers fails to load,
and ``power rpc-worker`` exits with an error. The RPC build itself is tested by tests/rpc in
the ``rpc`` nox session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from power.errors import RunnerLoadError
from power.supervisor import RunnerProcess
from proto import LoadParams
from tests.support.net import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.model]

INSTALL = 'CMAKE_ARGS="-DGGML_RPC=ON" pip install --force-reinstall --no-cache-dir'


async def test_a_model_with_rpc_workers_is_a_load_error_naming_the_build_it_needs(
    smollm2_gguf: Path,
) -> None:
    params = LoadParams(model_path=str(smollm2_gguf), n_ctx=512, rpc_workers=("127.0.0.1:1",))
    with pytest.raises(RunnerLoadError) as err:
        await RunnerProcess.start(params, model="smollm2", engine="llama", load_timeout_s=60)
    assert "built without llama.cpp's RPC backend" in str(err.value)
    assert INSTALL in str(err.value)


def test_rpc_worker_without_the_rpc_backend_is_an_error(clean_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "power", "rpc-worker", "--port", str(free_port())],
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("Error: this llama-cpp-python was built without")
    assert INSTALL in done.stderr
