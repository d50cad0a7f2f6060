"""An embedding model (a GGUF with a pooling type) on the real runner: it embeds as the same
weights do as a chat model, and its runner does not hold a full generation context it never
uses. The model is SmolLM2 with ``llama.pooling_type = 1`` (mean) added to its header."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from power.options import DEFAULT_NUM_BATCH
from power.store.gguf import read_gguf
from power.supervisor.memory import estimate
from tests.support.server import Server, post, power_server, upload
from tests.support.synth import with_metadata

pytestmark = pytest.mark.model

NUM_CTX, PARALLEL = 4096, 4
TEXTS = ["The sea is deep.", "Hi", "A lighthouse keeper finds a message in a bottle."]


@pytest.fixture
def server(clean_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    env = dict(clean_env, OLLAMA_MODELS=str(tmp_path / "models"),
               OLLAMA_NUM_PARALLEL=str(PARALLEL), PYTHONUNBUFFERED="1")  # fmt: skip
    with power_server(env, tmp_path / "server.log") as srv:
        yield srv


def embed(server: Server, model: str) -> np.ndarray:
    body = {"model": model, "input": TEXTS, "options": {"num_ctx": NUM_CTX}}
    resp = post(server, "/api/embed", body)
    assert resp.status_code == 200, resp.text
    return np.array(resp.json()["embeddings"])


def test_an_embedding_model_embeds_like_its_weights_and_holds_no_full_generation_context(
    server: Server, smollm2_gguf: Path, tmp_path: Path
) -> None:
    gguf = with_metadata(smollm2_gguf, tmp_path / "smol-embed.gguf", {"llama.pooling_type": 1})
    files = {"smol-embed.gguf": upload(server, gguf)}
    created = post(server, "/api/create", {"model": "smol-embed", "files": files, "stream": False})
    assert created.status_code == 200, created.text
    show = post(server, "/api/show", {"model": "smol-embed"}).json()
    assert show["capabilities"] == ["embedding"]

    pooled = embed(server, "smol-embed")  # llama.cpp pools by mean
    chat = embed(server, "smollm2")  # the runner means a chat model's rows
    assert pooled.shape == (len(TEXTS), 576)
    np.testing.assert_allclose(pooled, chat, atol=2e-4)
    generate = {"model": "smol-embed", "prompt": "Hi", "stream": False}
    refused = post(server, "/api/generate", generate)
    assert refused.status_code == 400
    assert "does not support generate" in refused.json()["error"]

    rss = {
        m["name"]: m["memory"]["rss"] for m in httpx.get(f"{server.url}/api/ps").json()["models"]
    }
    # Both runners hold the weights and one embedding context of NUM_CTX cells; the chat model's
    # generation context holds NUM_CTX cells per sequence more, which the embedding model's
    # (256 per sequence) does not: at least half of that difference must show.
    meta = read_gguf(smollm2_gguf).metadata
    layers, embd = meta["llama.block_count"], meta["llama.embedding_length"]
    kv_dim = meta["llama.attention.head_count_kv"] * embd // meta["llama.attention.head_count"]
    per_cell = layers * 2 * kv_dim * 2  # K and V, f16
    unused = (NUM_CTX - 256) * PARALLEL * per_cell
    assert rss["smol-embed:latest"] < rss["smollm2:latest"] - unused // 2
    need = estimate(read_gguf(gguf).metadata, file_size=gguf.stat().st_size, n_ctx=NUM_CTX,
                    num_parallel=PARALLEL, n_batch=DEFAULT_NUM_BATCH, embedding=True)  # fmt: skip
    assert rss["smol-embed:latest"] <= need.total  # placement counted what the runner holds
