"""Embedding inputs at their limits: an embedding model embeds up to its context (not its batch),
a long text cut to the context costs only the tokenizing of a prefix, token ids are embedded as
the ids they are (special tokens included), an empty input is the model's BOS or a 400 (never a
vector of zeros), and a slow tokenizing never holds up another client's stream. The model is
SmolLM2 (``llama.pooling_type = 1`` makes it an embedding model); the last test drives a fake
engine in a real runner process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from power.supervisor import RequestStream, Supervisor
from proto import Embed, Embeddings, FromRunner, LoadParams, Tokens
from runner.engine import PromptTooLongError
from runner.llama_engine import LlamaEngine
from tests.support.runners import leased
from tests.support.server import Server, post, upload
from tests.support.spawn import Spawner, drain, gen, settings
from tests.support.spawn import model as fake_model
from tests.support.synth import with_metadata


def create(server: Server, name: str, gguf: Path) -> None:
    files = {f"{name}.gguf": upload(server, gguf)}
    created = post(server, "/api/create", {"model": name, "files": files, "stream": False})
    assert created.status_code == 200, created.text


def with_bos(src: Path, dst: Path) -> Path:
    """SmolLM2 with ``tokenizer.ggml.add_bos_token`` on (its header has it off)."""
    key = b"tokenizer.ggml.add_bos_token"
    off = len(key).to_bytes(8, "little") + key + (7).to_bytes(4, "little") + b"\x00"  # bool
    raw = src.read_bytes()
    assert raw.count(off) == 1
    dst.write_bytes(raw.replace(off, off[:-1] + b"\x01"))
    return dst


def embedding(server: Server, model: str, value: Any) -> tuple[np.ndarray, int]:
    """/v1/embeddings' vector for ``value`` and its prompt tokens."""
    resp = post(server, "/v1/embeddings", {"model": model, "input": value})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return np.array(body["data"][0]["embedding"]), body["usage"]["prompt_tokens"]


@pytest.mark.model
def test_an_embedding_model_embeds_up_to_its_context_not_its_batch(
    server: Server, smollm2_gguf: Path, tmp_path: Path
) -> None:
    gguf = with_metadata(smollm2_gguf, tmp_path / "smol-embed.gguf", {"llama.pooling_type": 1})
    create(server, "smol-embed", gguf)
    opts = {"num_ctx": 1024}  # num_batch stays at 512
    body = {"model": "smol-embed", "input": "hello " * 1000, "truncate": False, "options": opts}
    whole = post(server, "/api/embed", body)
    assert whole.status_code == 200, whole.text
    assert whole.json()["prompt_eval_count"] == 1001
    body = {"model": "smol-embed", "input": "hello " * 3000, "options": opts}
    cut = post(server, "/api/embed", body)
    assert cut.status_code == 200, cut.text
    assert cut.json()["prompt_eval_count"] == 1024  # cut at the context


@pytest.mark.model
def test_token_ids_are_embedded_as_they_are(server: Server) -> None:
    special, n = embedding(server, "smollm2", [1, 4093])  # <|im_start|>user
    assert n == 2
    user, _ = embedding(server, "smollm2", "user")
    assert float(special @ user) < 0.99  # not just "user"
    only_special, n = embedding(server, "smollm2", [1, 2, 3])
    assert n == 3
    assert np.linalg.norm(only_special) == pytest.approx(1.0, abs=1e-4)
    text, _ = embedding(server, "smollm2", "hello")
    ids, _ = embedding(server, "smollm2", [28120])  # "hello"
    assert float(text @ ids) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.model
def test_an_empty_input_is_the_models_bos_or_a_400(
    server: Server, smollm2_gguf: Path, tmp_path: Path
) -> None:
    for path, body in (("/api/embed", {"input": [""]}), ("/v1/embeddings", {"input": ""})):
        resp = post(server, path, {"model": "smollm2", **body})  # SmolLM2 adds no BOS
        assert resp.status_code == 400, resp.text
        assert "input 0 is empty" in resp.text
    create(server, "smol-bos", with_bos(smollm2_gguf, tmp_path / "smol-bos.gguf"))
    resp = post(server, "/api/embed", {"model": "smol-bos", "input": [""]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["prompt_eval_count"] == 1  # its BOS alone
    (vector,) = resp.json()["embeddings"]
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)


class Counting(LlamaEngine):
    """The real engine, remembering the longest text it tokenized."""

    longest = 0

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        self.longest = max(self.longest, len(text))
        return super().tokenize(text, add_special=add_special, parse_special=parse_special)


@pytest.fixture(scope="module")
def engine(smollm2_gguf: Path) -> Iterator[Counting]:
    eng = Counting()
    params = LoadParams(model_path=str(smollm2_gguf), n_ctx=1024, n_threads=2, num_parallel=1)
    eng.load(params, lambda fraction: True)
    yield eng
    eng.close()


@pytest.mark.model
def test_a_text_cut_to_the_context_is_tokenized_only_as_far_as_it_needs(engine: Counting) -> None:
    text = "hello world, " * 100_000  # 1.3 MB: about a second of tokenizing whole
    full = engine.tokenize(text, add_special=True, parse_special=False)
    engine.longest = 0
    assert engine.embed_tokens(text, n_ctx=1024, truncate=True) == full[:1024]
    assert engine.longest < len(text) // 100
    engine.longest = 0
    with pytest.raises(PromptTooLongError):
        engine.embed_tokens(text, n_ctx=1024, truncate=False)
    assert engine.longest < len(text) // 100
    short = "hello world"
    assert engine.embed_tokens(short, n_ctx=1024, truncate=False) == engine.tokenize(
        short, add_special=True, parse_special=False
    )


@pytest.mark.anyio
async def test_tokenizing_an_embedding_input_never_holds_up_a_stream(tmp_path: Path) -> None:
    # Tokenizing a MiB takes this runner 2 s; a chat of 3 tokens takes it milliseconds.
    spawn = Spawner("fake:count?delay=0.005&tokenize_delay=2")
    m = fake_model(tmp_path)
    p = LoadParams(model_path=m.model_path, n_ctx=512, num_parallel=2)
    big = "w " * (1 << 19)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        async with leased(sup, m, p) as loaded:
            client = loaded.runner.client
            embed = client.open(lambda i: Embed(id=i, inputs=(big, "a b")))
            chat = client.open(gen("go", num_predict=3))
            order: list[str] = []

            async def finish(name: str, stream: RequestStream) -> Sequence[FromRunner]:
                out = await drain(stream)
                order.append(name)
                return out

            vectors, answer = await asyncio.gather(finish("embed", embed), finish("chat", chat))
    assert order == ["chat", "embed"]  # the chat ran while the input was being tokenized
    assert "".join(m.text for m in answer if isinstance(m, Tokens)) == "1 2 3 "
    got = [v for msg in vectors if isinstance(msg, Embeddings) for v in msg.vectors]
    assert len(got) == 2
