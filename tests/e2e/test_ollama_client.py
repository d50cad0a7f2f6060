"""The official ``ollama`` Python client against ``power serve`` with the real SmolLM2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import psutil
import pytest

from tests.support.server import Server

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0, "seed": 7, "num_predict": 16}


@pytest.fixture
def client(server: Server) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.url) as c:
        yield c


def test_generate_and_chat_streaming_and_not(client: ollama.Client, server: Server) -> None:
    whole = client.generate(
        model="smollm2", prompt="What is the capital of France?", options=GREEDY
    )
    assert whole.done
    assert whole.done_reason in ("stop", "length")
    assert whole.response
    assert whole.eval_count
    assert whole.eval_count <= 16
    assert whole.context
    assert whole.total_duration
    assert whole.prompt_eval_count
    parts = list(
        client.generate(
            model="smollm2", prompt="What is the capital of France?", options=GREEDY, stream=True
        )
    )
    assert "".join(p.response or "" for p in parts) == whole.response  # greedy + seed: same
    assert parts[-1].done
    assert not any(p.done for p in parts[:-1])

    msgs = [{"role": "user", "content": "Name a color."}]
    reply = client.chat(model="smollm2", messages=msgs, options=GREEDY)
    assert reply.message.role == "assistant"
    assert reply.message.content
    chunks = list(client.chat(model="smollm2", messages=msgs, options=GREEDY, stream=True))
    assert "".join(c.message.content or "" for c in chunks) == reply.message.content
    assert chunks[-1].done_reason in ("stop", "length")

    (loaded,) = client.ps().models
    assert loaded.model == "smollm2:latest"
    assert loaded.size
    assert loaded.context_length
    (raw,) = httpx.get(f"{server.url}/api/ps").json()["models"]  # A3S Power's extra fields
    assert raw["pid"] in [c.pid for c in psutil.Process(server.proc.pid).children()]
    assert raw["memory"]["rss"] == raw["size"] > 50 * 2**20


def test_list_show_copy_delete(client: ollama.Client) -> None:
    client.generate(model="smollm2", prompt="")  # imports the starter model and loads it
    names = [m.model for m in client.list().models]
    assert "smollm2:latest" in names
    info = client.show("smollm2")
    assert info.details is not None
    assert info.details.family == "llama"
    assert info.modelinfo is not None
    assert info.modelinfo["general.architecture"] == "llama"
    assert "completion" in (info.capabilities or [])
    client.copy("smollm2", "my-copy:v1")
    assert "my-copy:v1" in [m.model for m in client.list().models]
    assert client.generate(model="my-copy:v1", prompt="Hi", options=GREEDY).response
    client.delete("my-copy:v1")
    assert "my-copy:v1" not in [m.model for m in client.list().models]
    with pytest.raises(ollama.ResponseError) as info_err:
        client.show("my-copy:v1")
    assert info_err.value.status_code == 404


def test_create_from_an_uploaded_gguf_with_system_and_parameters(
    client: ollama.Client, smollm2_gguf: Path, server: Server
) -> None:
    digest = client.create_blob(smollm2_gguf)
    progress = list(
        client.create(
            model="pirate",
            files={"smol.gguf": digest},
            system="You are a pirate. Say arr.",
            parameters={"temperature": 0, "num_predict": 8},
            stream=True,
        )
    )
    assert progress[-1].status == "success"
    shown = client.show("pirate")
    assert "num_predict" in (shown.parameters or "")
    assert "You are a pirate" in (shown.modelfile or "")
    raw = httpx.post(f"{server.url}/api/show", json={"model": "pirate"}).json()
    assert raw["system"] == "You are a pirate. Say arr."
    reply = client.chat(model="pirate", messages=[{"role": "user", "content": "Hello"}])
    assert reply.eval_count == 8 or reply.done_reason == "stop"
    client.delete("pirate")
