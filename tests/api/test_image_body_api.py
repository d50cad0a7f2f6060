"""What an image request costs the gateway: each image is decoded once, from its text as it
is (no ASCII copy first, no decode to check it and another to use it), on a worker thread when
it is large; line-wrapped base64 is taken on every API, as on the native one.

Memory is what ``tracemalloc`` saw at its peak while the real app served one request, held
against the copies the request has to make: the body, its JSON string (plus, for OpenAI, the
payload cut from the data URL) and the decoded image.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import tracemalloc
from typing import Any

import pytest

from power.api import semantics as sem
from tests.support.app import TestClient
from tests.support.runners import ScriptedRunners

IMAGE = b"\x89PNG\r\n\x1a\n" + os.urandom((8 << 20) - 8)


def _native_chat(data: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "what is it?", "images": [data]}]}


def _native_generate(data: str) -> dict[str, Any]:
    return {"prompt": "what is it?", "images": [data]}


def _openai(data: str) -> dict[str, Any]:
    url = f"data:image/png;base64,{data}"
    parts = [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return {"messages": [{"role": "user", "content": parts}]}


def _anthropic(data: str) -> dict[str, Any]:
    source = {"type": "base64", "media_type": "image/png", "data": data}
    parts = [{"type": "text", "text": "what is it?"}, {"type": "image", "source": source}]
    return {"max_tokens": 5, "messages": [{"role": "user", "content": parts}]}


ROUTES = {  # path -> (body builder, copies of the body the request holds while decoding)
    "/api/chat": (_native_chat, 2),
    "/api/generate": (_native_generate, 2),
    "/v1/chat/completions": (_openai, 3),  # + the payload, cut from its data URL
    "/v1/messages": (_anthropic, 2),
}


def _raw(body: dict[str, Any]) -> bytes:
    return json.dumps({"model": "vis", "stream": False, **body}).encode()


def _post(client: TestClient, path: str, raw: bytes) -> None:
    resp = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("path", ROUTES)
def test_an_image_is_decoded_once_from_its_text_as_it_is(
    client: TestClient, sup: ScriptedRunners, path: str
) -> None:
    build, copies = ROUTES[path]
    _post(client, path, _raw(build(base64.b64encode(b"warm").decode())))  # imports, templates
    raw = _raw(build(base64.b64encode(IMAGE).decode()))
    started = not tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        _post(client, path, raw)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        if started:
            tracemalloc.stop()
    assert sup.generations()[-1].images == (IMAGE,)
    # A second decode, or a copy of the text to decode, is one more body's worth at the peak.
    bound = copies * len(raw) + len(IMAGE) + len(raw) // 2
    assert peak <= bound, f"peak {peak >> 20} MiB for a {len(raw) >> 20} MiB body"


def test_a_large_image_is_decoded_off_the_event_loop() -> None:
    """While a large image decodes, the loop runs other tasks; a small one decodes in place."""

    async def order(data: str) -> list[str]:
        seen: list[str] = []

        async def other() -> None:
            seen.append("other task")

        task = asyncio.create_task(other())  # ready to run at the loop's next turn
        assert await sem.read_images([data], "images") == (base64.b64decode(data),)
        seen.append("decoded")
        await task
        return seen

    large = base64.b64encode(bytes(1 << 20)).decode()
    assert asyncio.run(order(large)) == ["other task", "decoded"]
    assert asyncio.run(order(base64.b64encode(b"small").decode())) == ["decoded", "other task"]


def test_line_wrapped_base64_is_taken_on_every_api_and_bad_base64_is_named(
    client: TestClient, sup: ScriptedRunners
) -> None:
    image = bytes(range(256)) * 4
    wrapped = base64.encodebytes(image).decode()  # MIME: a line break every 76 characters
    assert "\n" in wrapped
    for path, (build, _) in ROUTES.items():
        _post(client, path, _raw(build(wrapped)))
        assert sup.generations()[-1].images == (image,), path
    bad = base64.b64encode(image).decode()[:-1]  # one character short: not padded
    resp = client.post("/v1/chat/completions", json={"model": "vis", **_openai(bad)})
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "image data is not valid base64"
    assert resp.json()["error"]["param"] == "messages[0].content[1]"
    resp = client.post("/v1/messages", json={"model": "vis", **_anthropic(bad)})
    assert resp.status_code == 400
    message = "messages.0.content.1: image data is not valid base64"
    assert resp.json()["error"]["message"] == message
