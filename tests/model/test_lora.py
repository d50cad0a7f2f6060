"""LoRA adapters end to end: `power create` with ADAPTER, then generation on the real runner.

The adapters are written here (``tests.support.synth``) for SmolLM2's own tensor shapes: one with
random A and B changes the model's greedy answer; one whose B matrices are zero adds nothing,
so the answer must stay the base model's exactly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.server import Server, post, upload
from tests.support.synth import write_gguf, write_lora

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0, "seed": 42, "num_predict": 12}
PROMPT = "Write one sentence about the sea."


def generate(server: Server, model: str) -> httpx.Response:
    body = {"model": model, "prompt": PROMPT, "stream": False, "options": GREEDY}
    return post(server, "/api/generate", body)


def create(server: Server, body: dict[str, Any]) -> None:
    resp = post(server, "/api/create", {**body, "stream": False})
    assert resp.status_code == 200, resp.text


def test_an_adapter_changes_greedy_output_and_a_zero_one_does_not(
    server: Server, smollm2_gguf: Path, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    write_lora(tmp_path / "lora.gguf", smollm2_gguf)
    zero = write_lora(tmp_path / "zero.gguf", smollm2_gguf, zero=True)
    (tmp_path / "Modelfile").write_text("FROM smollm2\nADAPTER ./lora.gguf\n")
    cli = subprocess.run(  # `power create` uploads the adapter; the server reads no path
        [sys.executable, "-m", "power", "create", "smol-lora", "-f", str(tmp_path / "Modelfile")],
        env=dict(clean_env, OLLAMA_HOST=server.url),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    digest = upload(server, zero)
    create(server, {"model": "smol-zero", "from": "smollm2", "adapters": {"zero.gguf": digest}})

    show = post(server, "/api/show", {"model": "smol-lora"}).json()
    assert "\nADAPTER " in show["modelfile"]

    base = generate(server, "smollm2").json()["response"]
    adapted = generate(server, "smol-lora").json()["response"]
    unchanged = generate(server, "smol-zero").json()["response"]
    assert base
    assert adapted != base
    assert unchanged == base
    assert generate(server, "smol-lora").json()["response"] == adapted  # reproducible
    runners = {m["name"] for m in httpx.get(f"{server.url}/api/ps").json()["models"]}
    assert {"smol-lora:latest", "smol-zero:latest"} <= runners  # one runner per adapter set


def test_an_adapter_that_does_not_fit_the_model_is_a_clear_load_error(
    server: Server, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    wrong = write_gguf(
        tmp_path / "wrong.gguf",
        {"general.architecture": "llama", "general.type": "adapter", "adapter.type": "lora",
         "adapter.lora.alpha": 8.0},
        {"blk.0.attn_q.weight.lora_a": rng.standard_normal((8, 100)).astype(np.float32),
         "blk.0.attn_q.weight.lora_b": rng.standard_normal((576, 8)).astype(np.float32)},
    )  # fmt: skip
    adapters = {"w.gguf": upload(server, wrong)}
    create(server, {"model": "smol-wrong", "from": "smollm2", "adapters": adapters})
    resp = generate(server, "smol-wrong")
    assert resp.status_code == 500
    error = resp.json()["error"]
    assert "failed to load LoRA adapter" in error
    assert "blk.0.attn_q.weight' has incorrect shape" in error
    assert server.proc.poll() is None  # the gateway is fine, and serves the base model
    assert generate(server, "smollm2").status_code == 200

    not_lora = write_gguf(tmp_path / "not-lora.gguf", {"general.architecture": "llama",
                                                      "general.type": "adapter"}, {})  # fmt: skip
    adapters = {"b.gguf": upload(server, not_lora)}
    create(server, {"model": "smol-bad", "from": "smollm2", "adapters": adapters})
    resp = generate(server, "smol-bad")
    assert resp.status_code == 500
    assert "expect adapter.type to be 'lora'" in resp.json()["error"]
