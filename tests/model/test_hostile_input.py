"""Hostile input against the real llama.cpp runner: a 4xx, and the same runner keeps serving.

llama.cpp aborts the process on a token id past the vocabulary (detokenize) and fails the decode
on one in a prompt; the gateway checks ids first. A thread count past the CPUs is clamped.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.server import Server, post

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0, "num_predict": 2, "seed": 1}


def _runner_pid(server: Server) -> int:
    (row,) = httpx.get(f"{server.url}/api/ps", timeout=30).json()["models"]
    pid: int = row["pid"]
    return pid


def test_token_ids_past_the_vocabulary_are_400s_and_the_runner_lives_on(server: Server) -> None:
    ok = post(server, "/api/generate", {"model": "smollm2", "prompt": "Hi", "stream": False,
                                        "options": GREEDY})  # fmt: skip
    assert ok.status_code == 200, ok.text
    pid = _runner_pid(server)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/v1/completions", {"model": "smollm2", "prompt": [99999999], "max_tokens": 2}),
        ("/v1/completions", {"model": "smollm2", "prompt": [-1], "max_tokens": 2}),
        ("/v1/embeddings", {"model": "smollm2", "input": [[49152]]}),
        ("/api/generate", {"model": "smollm2", "prompt": "Hi", "context": [99999999],
                           "stream": False, "options": GREEDY}),
    ]  # fmt: skip
    for path, body in cases:
        r = post(server, path, body)
        assert r.status_code == 400, (path, body, r.text)
        assert "out of range" in r.text or "past the 49152 tokens" in r.text, r.text
    r = post(server, "/v1/completions", {"model": "smollm2", "prompt": [19556], "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert _runner_pid(server) == pid


def test_num_thread_past_the_cpus_is_clamped(server: Server) -> None:
    body = {"model": "smollm2", "prompt": "Hi", "stream": False,
            "options": {**GREEDY, "num_thread": 100000}}  # fmt: skip
    r = post(server, "/api/generate", body)
    assert r.status_code == 200, r.text
    assert "ERROR" not in server.log_text()
