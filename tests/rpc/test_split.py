"""SmolLM2 split over two llama.cpp RPC workers on loopback and this machine: the same greedy
tokens as a local run, and a worker's death is one request's clear error, not the daemon's."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.rpc import Worker, rpc_worker
from tests.support.server import Server, post, power_server, upload
from tests.support.synth import with_metadata

pytestmark = [pytest.mark.model, pytest.mark.slow]

GREEDY = {"temperature": 0, "seed": 7, "num_predict": 48}
PROMPT = "Why is the sky blue?"


def greedy_tokens(server: Server) -> list[int]:
    """The token ids of prompt and answer (``context``) of one greedy generation."""
    body = {"model": "smollm2", "prompt": PROMPT, "stream": False, "options": GREEDY}
    resp = post(server, "/api/generate", body)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["eval_count"] == GREEDY["num_predict"], answer
    context: list[int] = answer["context"]
    return context


def model_buffer_mib(log: str, buffer_type: str) -> float:
    """The size of the model buffer llama.cpp logged for ``buffer_type`` (0 when none)."""
    pattern = re.escape(buffer_type) + r" model buffer size =\s*([0-9.]+) MiB"
    return sum(float(m) for m in re.findall(pattern, log))


def test_a_split_model_answers_token_for_token_as_a_local_one(
    server_env: dict[str, str],
    split_env: dict[str, str],
    workers: tuple[Worker, Worker],
    tmp_path: Path,
) -> None:
    with power_server(server_env, tmp_path / "local.log") as local:
        expected = greedy_tokens(local)
    with power_server(split_env, tmp_path / "split.log") as split:
        assert greedy_tokens(split) == expected
        log = split.log_text()
    for worker in workers:  # each worker holds layers, and so does this machine
        assert model_buffer_mib(log, f"RPC0[{worker.endpoint}]") > 0, log
        assert "Accepted client connection" in worker.log_text()
    assert model_buffer_mib(log, "CPU") + model_buffer_mib(log, "CPU_Mapped") > 0, log


def test_a_worker_with_mem_offers_its_cap_and_gets_its_share_of_the_layers(
    clean_env: dict[str, str], server_env: dict[str, str], tmp_path: Path
) -> None:
    """A worker capped at a quarter of this machine's RAM next to one that offers it all (the
    CPU device reports the whole RAM free): the runner's split shows the cap, and the capped
    worker holds fewer layers, by llama.cpp's own buffer sizes; the answer is unchanged."""
    cap_mib = (psutil.virtual_memory().total >> 20) // 4
    with power_server(server_env, tmp_path / "local.log") as local:
        expected = greedy_tokens(local)
    with (
        rpc_worker(clean_env, tmp_path / "capped.log", mem=f"{cap_mib}M") as capped,
        rpc_worker(clean_env, tmp_path / "whole.log") as whole,
    ):
        workers = f"{capped.endpoint},{whole.endpoint}"
        env = dict(server_env, A3S_POWER_RPC_WORKERS=workers, OLLAMA_DEBUG="1")
        with power_server(env, tmp_path / "split.log") as split:
            assert greedy_tokens(split) == expected
            log = split.log_text()
        assert f"(at most {cap_mib} MiB each)" in capped.log_text()
    split_line = re.search(r"llama\.cpp RPC: .*", log)
    assert split_line, log
    # The split line numbers the devices in order (RPC0, RPC1); buffer names use the worker's own.
    free = dict(re.findall(r"RPC\d+\[([0-9.:]+)\] (\d+) MiB free", split_line[0]))
    assert int(free[capped.endpoint]) == cap_mib, split_line[0]
    assert int(free[whole.endpoint]) > cap_mib, split_line[0]
    capped_mib = model_buffer_mib(log, f"RPC0[{capped.endpoint}]")
    whole_mib = model_buffer_mib(log, f"RPC0[{whole.endpoint}]")
    assert 0 < capped_mib < whole_mib, log


def test_a_worker_killed_mid_stream_fails_that_stream_clearly_and_the_daemon_stays_up(
    split_env: dict[str, str], workers: tuple[Worker, Worker], tmp_path: Path
) -> None:
    body = {
        "model": "smollm2",
        "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
        "raw": True,
        "options": {"temperature": 0, "num_predict": 2000},
    }
    with power_server(split_env, tmp_path / "split.log") as srv:
        with httpx.stream("POST", f"{srv.url}/api/generate", json=body, timeout=110) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            first = json.loads(next(lines))
            assert first["done"] is False
            workers[1].proc.kill()
            workers[1].proc.wait()
            last = json.loads(list(lines)[-1])
        assert "error" in last, last
        assert "Remote RPC server crashed" in last["error"], last

        health = httpx.get(f"{srv.url}/health", timeout=10)
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        # The next load cannot reach the dead worker: a load error that names it.
        again = post(srv, "/api/generate", {**body, "stream": False})
        assert again.status_code == 500
        assert f"cannot reach RPC worker {workers[1].endpoint}" in again.json()["error"]
        assert httpx.get(f"{srv.url}/api/tags", timeout=10).status_code == 200


def test_a_second_model_waits_for_the_first_to_leave_the_workers(
    server_env: dict[str, str], workers: tuple[Worker, Worker], smollm2_gguf: Path, tmp_path: Path
) -> None:
    """A worker serves one runner at a time. A request for a second model unloads the first,
    which holds the workers, and loads once it has gone, whatever ``max_loaded_models`` says;
    beside it, the new runner's connection would have waited in the worker's listen queue until
    the load's stall deadline (20 s here)."""
    other = with_metadata(smollm2_gguf, tmp_path / "other.gguf", {"test.copy": 1})
    env = dict(server_env, A3S_POWER_RPC_WORKERS=workers[0].endpoint, OLLAMA_LOAD_TIMEOUT="20s")
    with power_server(env, tmp_path / "split.log") as srv:
        create = {"model": "other", "files": {"other.gguf": upload(srv, other)}, "stream": False}
        assert post(srv, "/api/create", create).status_code == 200
        for name in ("smollm2", "other"):
            body = {"model": name, "prompt": PROMPT, "stream": False, "options": GREEDY}
            resp = post(srv, "/api/generate", body)
            assert resp.status_code == 200, resp.text
        ps = httpx.get(f"{srv.url}/api/ps", timeout=10).json()["models"]
        assert [m["name"] for m in ps] == ["other:latest"]


def test_a_worker_that_takes_the_connection_but_never_answers_is_a_clear_load_error(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    """As a worker busy with another client looks: its port accepts, nothing answers."""
    with socket.create_server(("127.0.0.1", 0)) as busy:
        endpoint = f"127.0.0.1:{busy.getsockname()[1]}"
        env = dict(server_env, A3S_POWER_RPC_WORKERS=endpoint, OLLAMA_LOAD_TIMEOUT="60s")
        with power_server(env, tmp_path / "split.log") as srv:
            resp = post(srv, "/api/generate", {"model": "smollm2", "prompt": PROMPT})
            assert resp.status_code == 500
            assert f"RPC worker {endpoint} took the connection but did not" in resp.text
            assert httpx.get(f"{srv.url}/health", timeout=10).status_code == 200
