"""The official ``ollama`` Python client: pull, show, create (with quantize), push, and a real
SmolLM2 pulled from ``docker-registry`` and run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest

from tests.support.registry import MODEL_TYPE, Registry, publish_tiny
from tests.support.server import Server, power_server
from tests.support.synth import write_llama_gguf


@pytest.fixture
def client(server: Server) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.url) as c:
        yield c


def test_pull_show_create_push(
    client: ollama.Client, registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    publish_tiny(registry, tiny_gguf)
    name = f"{registry.host}/library/tiny"
    statuses = [p.status for p in client.pull(name, insecure=True, stream=True)]
    assert statuses[0] == "pulling manifest"
    assert statuses[-1] == "success"
    assert client.pull(name, insecure=True).status == "success"
    shown = client.show(name)
    assert shown.details is not None
    assert shown.details.family == "llama"
    assert shown.template == "{{ .Prompt }}"
    assert "temperature" in (shown.parameters or "")
    assert shown.license == "MIT-ish test license"

    src = write_llama_gguf(tmp_path / "f16.gguf", dtype="f16", seed=3)
    digest = client.create_blob(src)
    steps = list(
        client.create(
            model="mine",
            files={"f16.gguf": digest},
            quantize="q4_K_M",
            system="be brief",
            parameters={"temperature": 0.1},
            stream=True,
        )
    )
    assert "quantizing F16 model to Q4_K_M" in {s.status for s in steps}
    assert steps[-1].status == "success"
    mine = client.show("mine")
    assert mine.details is not None
    assert mine.details.quantization_level == "Q4_K_M"
    assert "SYSTEM be brief" in (mine.modelfile or "")

    remote = f"{registry.host}/alice/mine:q4"
    client.copy("mine", remote)
    assert client.push(remote, insecure=True).status == "success"
    client.delete(remote)
    client.delete("mine")
    assert client.pull(remote, insecure=True).status == "success"
    again = client.show(remote)
    assert again.details is not None
    assert again.details.quantization_level == "Q4_K_M"
    assert again.modelfile == mine.modelfile.replace("mine:latest", remote)  # type: ignore[union-attr]

    with pytest.raises(ollama.ResponseError, match="pull model manifest: file does not exist"):
        client.pull(f"{registry.host}/library/none", insecure=True)


@pytest.mark.model
def test_real_smollm2_pulled_and_run(
    registry: Registry,
    smollm2_gguf: Path,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    template = b"{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    template += b"<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
    registry.publish(
        "library/smollm2-remote",
        "135m",
        [
            (MODEL_TYPE, smollm2_gguf.read_bytes()),
            ("application/vnd.ollama.image.template", template),
            ("application/vnd.ollama.image.params", b'{"stop":["<|im_end|>"]}\n'),
        ],
    )
    real_env = {k: v for k, v in env.items() if k != "A3S_POWER_RUNNER_ENGINE"}
    with power_server(real_env, tmp_path / "real.log") as srv, ollama.Client(host=srv.url) as c:
        name = f"{registry.host}/library/smollm2-remote:135m"
        assert c.pull(name, insecure=True).status == "success"
        out = c.generate(
            model=name,
            prompt="What is the capital of France?",
            options={"temperature": 0, "seed": 7, "num_predict": 16},
        )
        assert out.done
        assert out.response.strip()
