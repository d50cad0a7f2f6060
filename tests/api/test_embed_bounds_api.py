"""What one embedding request may cost the gateway, and token ids embedded as they are: a 400
naming the limit before any runner works when the answer would hold more numbers than
``MAX_EMBED_FLOATS`` (inputs times the model's width, or the ``dimensions`` asked for), a large
answer sent as it is encoded, and OpenAI token arrays that reach the runner as ids."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from power.api.embed import MAX_EMBED_FLOATS
from power.create.build import create_model
from power.settings import Settings
from power.store.store import ModelStore
from proto import Detokenize, Embed
from tests.support.app import PLAIN, TestClient, app_client
from tests.support.gguf import tiny_gguf
from tests.support.runners import ScriptedRunners

WIDE = 4096  # the embedding_length of model "wide"


@pytest.fixture
def client(tmp_path: Path, sup: ScriptedRunners) -> Iterator[TestClient]:
    """Models ``plain`` (no width in its header) and ``wide`` (4096 numbers a vector)."""
    store = ModelStore(tmp_path / "models")
    for name, extra in (("plain", {}), ("wide", {"llama.embedding_length": WIDE})):
        gguf = store.add_blob_from_file(tiny_gguf(tmp_path / f"{name}.gguf", extra=extra))
        for _ in create_model(store, name, {"from": gguf, "template": PLAIN}):
            pass
    with app_client(Settings(home=str(tmp_path)), sup, store) as c:
        yield c


def embeds(sup: ScriptedRunners) -> list[Embed]:
    return [m for m in sup.sent if isinstance(m, Embed)]


def error_text(body: dict[str, Any]) -> str:
    error = body["error"]
    return str(error if isinstance(error, str) else error["message"])


@pytest.mark.parametrize("path", ["/api/embed", "/v1/embeddings"])
def test_an_answer_over_the_limit_is_refused_before_the_runner_works(
    client: TestClient, sup: ScriptedRunners, path: str
) -> None:
    fit = MAX_EMBED_FLOATS // WIDE
    resp = client.post(path, json={"model": "wide", "input": [""] * (fit + 1)})
    assert resp.status_code == 400, resp.text
    error = error_text(resp.json())
    assert f"limit of {MAX_EMBED_FLOATS:,} numbers" in error
    assert f"send at most {fit} inputs" in error
    assert not embeds(sup)
    sup.vectors = [[3.0, 4.0, 1.0]] * (fit + 1)  # fewer dimensions let as many through
    resp = client.post(path, json={"model": "wide", "input": ["x"] * (fit + 1), "dimensions": 2})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    got = body["embeddings"] if path == "/api/embed" else [d["embedding"] for d in body["data"]]
    assert len(got) == fit + 1
    assert got[0] == pytest.approx([0.6, 0.8])


@pytest.mark.parametrize("path", ["/api/embed", "/v1/embeddings"])
def test_a_large_answer_is_sent_as_it_is_encoded(
    client: TestClient, sup: ScriptedRunners, path: str
) -> None:
    width, n = 300, 400  # 120,000 numbers
    row = [float(k % 7) - 3.0 for k in range(width)]
    sup.vectors = [row] * n
    resp = client.post(path, json={"model": "plain", "input": ["x"] * n})
    assert resp.status_code == 200, resp.text
    assert "content-length" not in resp.headers  # streamed, never whole in memory
    body = resp.json()
    vectors = body["embeddings"] if path == "/api/embed" else [d["embedding"] for d in body["data"]]
    norm = sum(v * v for v in row) ** 0.5
    assert len(vectors) == n
    assert vectors[-1] == pytest.approx([v / norm for v in row], abs=1e-6)
    if path == "/v1/embeddings":
        assert [d["index"] for d in body["data"]] == list(range(n))
        assert body["usage"] == {"prompt_tokens": n, "total_tokens": n}
    small = client.post(path, json={"model": "plain", "input": ["x"]})
    assert small.headers["content-length"] == str(len(small.content))


def test_token_arrays_reach_the_runner_as_ids(client: TestClient, sup: ScriptedRunners) -> None:
    sup.vectors = [[1.0, 0.0], [0.0, 2.0]]
    body = {"model": "plain", "input": [[1, 4093], [1, 2, 3]], "encoding_format": "base64"}
    resp = client.post("/v1/embeddings", json=body)
    assert resp.status_code == 200, resp.text
    (req,) = embeds(sup)
    assert req.tokens == ((1, 4093), (1, 2, 3))
    assert req.inputs == ()  # (no texts beside them)
    assert not [m for m in sup.sent if isinstance(m, Detokenize)]  # never through text
    second = base64.b64decode(resp.json()["data"][1]["embedding"])
    assert struct.unpack("<2f", second) == (0.0, 1.0)
    sup.vectors = [[1.0, 0.0]]
    single = client.post("/v1/embeddings", json={"model": "plain", "input": [28120, 905]})
    assert single.status_code == 200, single.text
    assert embeds(sup)[-1].tokens == ((28120, 905),)
    past = client.post("/v1/embeddings", json={"model": "plain", "input": [[sup.n_vocab]]})
    assert past.status_code == 400
    assert "out of range" in error_text(past.json())


def test_an_empty_token_array_is_refused(client: TestClient, sup: ScriptedRunners) -> None:
    sup.vectors = [[1.0, 0.0]]
    resp = client.post("/v1/embeddings", json={"model": "plain", "input": [[]]})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "input"
    assert not embeds(sup)
