"""Images end to end: SmolLM2 with a synthetic LLaVA projector, through llama.cpp's mtmd.

The projector (``tests.support.synth``) is random but of a real shape: llama.cpp loads it, encodes
images with it and decodes the embeddings into SmolLM2's KV cache. Each image is 4 positions.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from power.supervisor import Supervisor
from proto import Generate, LoadParams, Sampling
from tests.support.server import Server, post, upload
from tests.support.spawn import collect, llama_settings, llama_spawner, stub_model
from tests.support.synth import png, write_projector

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0, "seed": 42, "num_predict": 12}
IMAGE_TOKENS = 4  # (32 px / 16 px patches)^2


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def chat(server: Server, content: str, *images: bytes, model: str = "smol-vision") -> Any:
    message: dict[str, Any] = {"role": "user", "content": content}
    if images:
        message["images"] = [b64(i) for i in images]
    body = {"model": model, "stream": False, "options": GREEDY, "messages": [message]}
    return post(server, "/api/chat", body)


def evaluated(reply: dict[str, Any]) -> int:
    """Every prompt position, the evaluated ones and those reused from the cache alike."""
    return int(reply.get("prompt_eval_count", 0))


@pytest.fixture
def vision(server: Server, smollm2_gguf: Path, tmp_path: Path) -> Server:
    """``smol-vision``: SmolLM2's GGUF and the projector as two files of one model."""
    projector = write_projector(tmp_path / "mmproj.gguf")
    files = {"model.gguf": upload(server, smollm2_gguf), "mmproj.gguf": upload(server, projector)}
    created = post(server, "/api/create", {"model": "smol-vision", "files": files, "stream": False})
    assert created.status_code == 200, created.text
    return server


def test_images_are_evaluated_reproducibly_in_chat_and_generate(vision: Server) -> None:
    show = post(vision, "/api/show", {"model": "smol-vision"}).json()
    assert "vision" in show["capabilities"]
    assert show["projector_info"]["clip.projector_type"] == "mlp"
    assert show["projector_info"]["clip.vision.image_size"] == 32
    assert "completion" in show["capabilities"]
    text_only = chat(vision, "What is in this picture?")
    assert text_only.status_code == 200, text_only.text

    one = chat(vision, "What is in this picture?", png(40, 30, seed=1))
    assert one.status_code == 200, one.text
    first = one.json()
    assert first["done"] is True
    assert first["eval_count"] > 0
    assert evaluated(first) == evaluated(text_only.json()) + IMAGE_TOKENS

    again = chat(vision, "What is in this picture?", png(40, 30, seed=1)).json()
    assert again["message"]["content"] == first["message"]["content"]
    assert again.get("prompt_cache_count", 0) > IMAGE_TOKENS  # the same image, reused

    other = chat(vision, "What is in this picture?", png(40, 30, seed=2)).json()
    assert evaluated(other) == evaluated(first)
    assert other.get("prompt_cache_count", 0) < evaluated(first) - IMAGE_TOKENS  # not reused
    assert other["message"]["content"] != first["message"]["content"]

    two = chat(vision, "Compare [img] with [img].", png(64, 64, seed=1), png(16, 48, seed=3))
    assert two.status_code == 200, two.text
    assert evaluated(two.json()) > evaluated(first) + IMAGE_TOKENS - 2

    body = {"model": "smol-vision", "prompt": "Describe it.", "stream": False,
            "images": [b64(png(32, 32, seed=4))], "options": GREEDY}  # fmt: skip
    gen = post(vision, "/api/generate", body).json()
    plain = post(vision, "/api/generate", {**body, "images": []}).json()
    assert evaluated(gen) >= evaluated(plain) + IMAGE_TOKENS
    assert all(t >= 0 for t in gen["context"])  # an image's positions are no tokens

    raw = {**body, "raw": True, "prompt": "[img-0] A photo of"}
    assert post(vision, "/api/generate", raw).status_code == 200
    bad_index = post(vision, "/api/generate", {**raw, "prompt": "[img-3] A photo of"})
    assert bad_index.status_code == 400
    assert bad_index.json()["error"] == "invalid image index: 3"
    ends_with_image = post(vision, "/api/generate", {**raw, "prompt": "A photo: [img-0]"})
    assert ends_with_image.status_code == 400
    assert "must not end with an image" in ends_with_image.json()["error"]


def test_bad_images_are_400s_and_the_runner_keeps_serving(vision: Server) -> None:
    bad = {"model": "smol-vision", "stream": False, "options": GREEDY, "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": "Look", "images": ["not base64!"]}]}  # fmt: skip
    resp = post(vision, "/api/chat", bad)
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("invalid image data in messages[1].images[0]")

    resp = chat(vision, "Look", b"just some text, not an image")
    assert resp.status_code == 400
    assert "unsupported image format" in resp.json()["error"]

    truncated = png(40, 30, seed=1)[:60]
    resp = chat(vision, "Look", truncated)
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("failed to decode the PNG image")

    resp = chat(vision, "Look", png(8, 8), model="smollm2")
    assert resp.status_code == 400
    assert resp.json()["error"] == '"smollm2" does not support images'

    good = chat(vision, "Look", png(40, 30, seed=1))
    assert good.status_code == 200, good.text


def test_openai_and_anthropic_images_take_the_same_path(vision: Server) -> None:
    image = png(40, 30, seed=1)
    parts: list[dict[str, Any]] = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(image)}},
    ]
    body: dict[str, Any] = {
        "model": "smol-vision",
        "temperature": 0,
        "seed": 42,
        "max_tokens": 12,
        "messages": [{"role": "user", "content": parts}],
    }
    openai = post(vision, "/v1/chat/completions", body)
    assert openai.status_code == 200, openai.text
    plain = post(vision, "/v1/chat/completions", {**body, "messages": [
        {"role": "user", "content": "What is in this picture?"}]})  # fmt: skip
    openai_in = openai.json()["usage"]["prompt_tokens"]
    assert openai_in >= plain.json()["usage"]["prompt_tokens"] + IMAGE_TOKENS

    blocks: list[dict[str, Any]] = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": b64(image)}},
        {"type": "text", "text": "What is in this picture?"},
    ]  # fmt: skip
    message = {"model": "smol-vision", "max_tokens": 12, "temperature": 0,
               "messages": [{"role": "user", "content": blocks}]}  # fmt: skip
    anthropic = post(vision, "/v1/messages", message)
    assert anthropic.status_code == 200, anthropic.text
    assert anthropic.json()["usage"]["input_tokens"] >= IMAGE_TOKENS
    blocks[0]["source"]["data"] = b64(b"\xff\xd8\xff broken")
    assert post(vision, "/v1/messages", message).status_code == 400

    broken = [
        {**parts[0]},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(b"GIF89a...")}},
    ]
    resp = post(vision, "/v1/chat/completions", {**body, "messages": [
        {"role": "user", "content": broken}]})  # fmt: skip
    assert resp.status_code == 400


@pytest.mark.anyio
async def test_images_in_concurrent_sequences_match_lone_runs(
    tmp_path: Path, smollm2_gguf: Path
) -> None:
    """Four sequences in one batch, each with its own image evaluated between the batch's
    decodes, answer as each does alone."""
    projector = write_projector(tmp_path / "mmproj.gguf")
    model = stub_model(smollm2_gguf, "smol-vision")
    p = LoadParams(model_path=str(smollm2_gguf), projector_path=str(projector), n_ctx=1024,
                   n_threads=2, num_parallel=4)  # fmt: skip

    def ask(seed: int) -> Callable[[int], Generate]:
        prompt = "<|im_start|>user\n[img-0]What is this?<|im_end|>\n<|im_start|>assistant\n"
        images = (png(40, 30, seed=seed),)
        return lambda i: Generate(id=i, prompt=prompt, images=images, num_predict=12,
                                  sampling=Sampling(temperature=0.0, seed=42))  # fmt: skip

    async with Supervisor.open(llama_settings(tmp_path), spawn=llama_spawner()) as sup:
        alone = [await collect(sup.request(model, p, None, ask(seed))) for seed in range(4)]
        together = await asyncio.gather(
            *(collect(sup.request(model, p, None, ask(seed))) for seed in range(4))
        )
    assert [t for t, _ in together] == [t for t, _ in alone]
    assert len({t for t, _ in alone}) > 1  # the images make a difference
    assert {d.stats.prompt_tokens for _, d in alone} == {d.stats.prompt_tokens for _, d in together}
