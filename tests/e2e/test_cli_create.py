"""``power create`` as a process against ``power serve``: the CLI uploads what the Modelfile names.

The server never reads a path it is sent (issue 11), so local FROM and ADAPTER files reach it
only as uploaded blobs. Header-only GGUFs suffice: create reads headers, nothing is loaded.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import Server
from tests.support.synth import write_gguf


def power_create(
    server: Server, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "power", "create", *args],
        env=dict(env, OLLAMA_HOST=server.url),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def digest_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A model, a projector and a LoRA adapter beside a Modelfile that names them relatively."""
    base = tmp_path / "work"
    base.mkdir()
    return {
        "model": write_gguf(base / "model.gguf", {"general.architecture": "llama"}, {}),
        "mmproj": write_gguf(
            base / "mmproj.gguf", {"general.architecture": "clip", "general.type": "mmproj"}, {}
        ),
        "lora": write_gguf(
            base / "lora.gguf",
            {"general.architecture": "llama", "general.type": "adapter", "adapter.type": "lora"},
            {},
        ),
    }


def test_create_uploads_local_from_projector_and_adapter(
    server: Server, server_env: dict[str, str], files: dict[str, Path]
) -> None:
    modelfile = files["model"].parent / "Modelfile"
    modelfile.write_text(
        "FROM ./model.gguf\nFROM ./mmproj.gguf\nADAPTER ./lora.gguf\nPARAMETER temperature 0.3\n"
    )
    done = power_create(server, server_env, "cli-local", "-f", str(modelfile))
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "success"
    shown = httpx.post(f"{server.url}/api/show", json={"model": "cli-local"}).json()
    assert "vision" in shown["capabilities"]
    assert "temperature                    0.3" in shown["parameters"]
    layers = {x["mediaType"].rsplit(".", 1)[-1]: x["digest"] for x in _layers(server_env)}
    assert layers["model"] == digest_of(files["model"])
    assert layers["projector"] == digest_of(files["mmproj"])
    assert layers["adapter"] == digest_of(files["lora"])

    # FROM a model name: the name is sent as it is
    modelfile.write_text("FROM cli-local\nSYSTEM be brief\n")
    done = power_create(server, server_env, "cli-named", "-f", str(modelfile))
    assert done.returncode == 0, done.stderr
    shown = httpx.post(f"{server.url}/api/show", json={"model": "cli-named"}).json()
    assert shown["system"] == "be brief"
    assert shown["details"]["parent_model"] == "cli-local:latest"


def test_create_from_a_missing_local_file_fails_in_the_cli(
    server: Server, server_env: dict[str, str], tmp_path: Path
) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("FROM ./nowhere.gguf\n")
    done = power_create(server, server_env, "cli-missing", "-f", str(modelfile))
    assert done.returncode == 1
    assert done.stderr == "Error: FROM ./nowhere.gguf: no such file or directory\n"


def _layers(env: dict[str, str]) -> list[dict[str, Any]]:
    path = Path(env["OLLAMA_MODELS"]) / "manifests/registry.ollama.ai/library/cli-local/latest"
    layers: list[dict[str, Any]] = json.loads(path.read_text())["layers"]
    return layers
