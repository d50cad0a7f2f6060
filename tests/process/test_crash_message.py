"""What a client is told when a runner dies: the lines of its stderr that say why, not the
INFO, DEBUG and warning lines before them, which stay in the gateway's log with the whole tail
(the real Supervisor over ``python -m runner --engine fake:…`` children).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from power.errors import RunnerCrashedError
from power.supervisor import RunnerProcess, Supervisor
from proto import LoadParams
from tests.support.spawn import collect, gen, model, params, settings

pytestmark = pytest.mark.anyio

# Dies after its first token. Its context holds 16 tokens, so a longer prompt is truncated
# with a WARNING first; started verbose, the runner also logs DEBUG lines (no fake mode
# logs INFO lines before it dies).
NOISY_CRASH = "fake:echo?crash_after=1&n_ctx_train=16"


async def _verbose_spawn(params: LoadParams, *, model: str) -> RunnerProcess:
    return await RunnerProcess.start(
        params, model=model, engine=NOISY_CRASH, verbose=True, load_timeout_s=20
    )


async def test_a_crash_tells_the_client_its_cause_and_logs_the_whole_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    m = model(tmp_path)
    caplog.set_level(logging.ERROR, logger="power.runner")
    prompt = " ".join(f"word{i}" for i in range(40))
    async with Supervisor.open(settings(tmp_path), spawn=_verbose_spawn) as sup:
        with pytest.raises(RunnerCrashedError) as err:
            await collect(sup.request(m, params(m), None, gen(prompt, num_predict=5)))
    tail = "\n".join(err.value.stderr_tail)
    assert "DEBUG asyncio: " in tail  # the noise was there
    assert "WARNING runner.slots: truncating input prompt" in tail
    message = str(err.value)
    assert message.endswith("(exit status 9): fake engine: fatal: crash after 1 tokens")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "power.runner")
    assert "DEBUG asyncio: " in logged
    assert "WARNING runner.slots: truncating input prompt" in logged
    assert "fake engine: fatal: crash after 1 tokens" in logged


ASSERT = "/src/ggml/src/ggml.c:1852: GGML_ASSERT(ggml_can_repeat(b, a)) failed"
PLACED = "INFO runner.llama_engine: model placed: CPU_Mapped model 92.1 MiB, CPU KV 90.0 MiB"
PREFETCHED = "INFO runner.prefetch: read sha256-b1793ad5 ahead: 138 MB in 0.21 s"


@pytest.mark.parametrize(
    ("tail", "told"),
    [
        pytest.param([PLACED, PREFETCHED], "", id="killed-after-info-lines"),
        pytest.param(
            [
                PLACED,
                ASSERT,
                *(f"/usr/lib/libggml-base.so(+0x16a{i}b) [0x7f3a2c816a{i}b]" for i in range(6)),
                "Fatal Python error: Aborted",
            ],
            f"{ASSERT} | Fatal Python error: Aborted",
            id="ggml-assert-and-backtrace",
        ),
        pytest.param(
            [
                PLACED,
                "terminate called after throwing an instance of 'std::bad_alloc'",
                "  what():  std::bad_alloc",
                "Fatal Python error: Aborted",
                PREFETCHED,
            ],
            "terminate called after throwing an instance of 'std::bad_alloc' |   what():"
            "  std::bad_alloc | Fatal Python error: Aborted",
            id="cpp-terminate",
        ),
        pytest.param(
            [
                "ERROR runner.batch: admitting request 3 failed",
                "Traceback (most recent call last):",
                '  File "/app/runner/batch.py", line 80, in admit',
                "    spans = engine.media_prompt(text, images, add_special=True)",
                "MemoryError: cannot allocate 3.2 GB",
                PLACED,
            ],
            "ERROR runner.batch: admitting request 3 failed | MemoryError: cannot allocate 3.2 GB",
            id="python-exception",
        ),
        pytest.param(
            [PLACED, "WARNING runner.slots: truncating input prompt: 41 tokens to 8", PREFETCHED],
            "WARNING runner.slots: truncating input prompt: 41 tokens to 8",
            id="only-a-warning",
        ),
    ],
)
def test_the_lines_told_are_those_that_say_why(tail: list[str], told: str) -> None:
    error = RunnerCrashedError("stopped unexpectedly", stderr_tail=tail)
    assert str(error) == (f"stopped unexpectedly: {told}" if told else "stopped unexpectedly")
    assert error.stderr_tail == tail  # the whole tail stays on the error
