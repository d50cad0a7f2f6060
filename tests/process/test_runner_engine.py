"""A runner that cannot start its engine says why in place of ``Hello``; nothing retries it."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from power.errors import RunnerLoadError
from power.supervisor import RunnerProcess
from runner.llama_compat import TESTED_VERSIONS

pytestmark = pytest.mark.anyio


def _with_fake_release(tmp_path: Path, version: str) -> dict[str, str]:
    """An environment where the installed llama-cpp-python's metadata reads ``version``."""
    dist = tmp_path / f"llama_cpp_python-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: {version}\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    return env


async def test_an_untested_llama_cpp_python_fails_the_handshake_with_what_to_install(
    tmp_path: Path,
) -> None:
    env = _with_fake_release(tmp_path, "9.9.9")
    with pytest.raises(RunnerLoadError) as err:
        await RunnerProcess.launch(engine="llama", env=env, timeout_s=30)
    message = str(err.value)
    assert message.startswith("the model runner cannot start: llama-cpp-python 9.9.9")
    assert f"tested only with {', '.join(TESTED_VERSIONS)}" in message


async def test_an_unknown_engine_fails_the_handshake(tmp_path: Path) -> None:
    with pytest.raises(RunnerLoadError, match="unknown engine 'turbo'"):
        await RunnerProcess.launch(engine="turbo", timeout_s=30)


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="OpenBLAS starts one thread per CPU at most"
)
async def test_a_runner_starts_no_blas_threads_unless_told_to() -> None:
    """numpy's OpenBLAS pool would spin beside llama.cpp's compute threads: a runner has none,
    unless the user's environment asks for them."""
    threads = []
    for blas in (None, "2"):
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
        if blas is not None:
            env["OPENBLAS_NUM_THREADS"] = blas
        runner = await RunnerProcess.launch(engine="llama", env=env, timeout_s=60)
        try:
            threads.append(psutil.Process(runner.pid).num_threads())
        finally:
            await runner.aclose()
    assert threads[1] == threads[0] + 1  # the second BLAS thread (the first is the caller's)
