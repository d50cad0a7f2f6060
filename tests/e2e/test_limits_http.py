"""Hostile input over real HTTP: body limits, deep nesting, huge numbers, endless templates.

A real server (fake ``echo`` runners) with a 1 MiB body limit. Every case is a 4xx that says
what is wrong, and the server goes on serving.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.limited import BODY_LIMIT, BODY_TIMEOUT_S, ENDPOINTS, MODEL
from tests.support.server import Server

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def test_a_body_over_the_limit_is_413_in_each_apis_shape(limited_server: Server) -> None:
    big = "x" * (4 * BODY_LIMIT)
    with httpx.Client(base_url=limited_server.url, timeout=30) as client:
        r = client.post("/api/chat", json={**CHAT, "stream": False, "system": big})
        assert r.status_code == 413
        assert r.json() == {
            "error": f"request body too large: the limit is {BODY_LIMIT} bytes"
            " (A3S_POWER_MAX_BODY_SIZE)"
        }
        assert r.headers["connection"] == "close"  # the rest of the body was never read
        r = client.post("/v1/chat/completions", json={**CHAT, "user": big})
        assert (r.status_code, r.json()["error"]["type"]) == (413, "invalid_request_error")
        r = client.post("/v1/messages", json={**CHAT, "max_tokens": 5, "system": big})
        assert (r.status_code, r.json()["error"]["type"]) == (413, "request_too_large")
        r = client.post("/api/show", json={"model": MODEL, "system": big})
        assert r.status_code == 413
        # the client carries on, on a fresh connection
        r = client.post("/api/chat", json={**CHAT, "stream": False})
        assert r.status_code == 200, r.text
        assert r.json()["message"]["content"].strip() == "hi"


def test_a_chunked_body_is_refused_once_it_passes_the_limit(limited_server: Server) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"model": "fuzz", "prompt": "'
        for _ in range(64):  # 4 MiB in all, without a Content-Length
            sent += 1
            yield b"x" * (64 * 1024)
        yield b'", "stream": false}'

    r = httpx.post(f"{limited_server.url}/api/generate", content=chunks(), timeout=30)
    assert r.status_code == 413
    assert "request body too large" in r.json()["error"]
    assert r.request.headers.get("transfer-encoding") == "chunked"


def test_blob_uploads_stream_past_the_limit(limited_server: Server) -> None:
    data = b"\x01" * (3 * BODY_LIMIT)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = httpx.post(f"{limited_server.url}/api/blobs/{digest}", content=data, timeout=30)
    assert r.status_code == 201, r.text
    assert httpx.head(f"{limited_server.url}/api/blobs/{digest}").status_code == 200


def _raw(url: str, head: bytes, body: bytes, *, half_close: bool = False) -> tuple[float, bytes]:
    """Send ``head`` and ``body`` on a raw connection; (seconds until the server closed it,
    everything it answered)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        started, answer = time.monotonic(), b""
        while chunk := sock.recv(65536):
            answer += chunk
        return time.monotonic() - started, answer


@pytest.mark.parametrize(
    "path", ["/api/generate", "/v1/chat/completions", "/api/blobs/sha256:" + "a" * 64]
)
def test_a_body_that_stops_arriving_is_408_and_its_connection_closed(
    limited_server: Server, path: str
) -> None:
    """A chunked body that never ends held its connection and handler for good."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: application/json\r\n\r\n"
    ).encode()
    took, answer = _raw(limited_server.url, head, b'5\r\n{"mod\r\n')
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"the request body stopped arriving" in answer
    assert BODY_TIMEOUT_S <= took < BODY_TIMEOUT_S + 10
    r = httpx.post(f"{limited_server.url}/api/chat", json={**CHAT, "stream": False}, timeout=30)
    assert r.status_code == 200, r.text


def test_a_client_that_leaves_mid_body_is_not_a_server_error(limited_server: Server) -> None:
    """Fewer bytes than its Content-Length, then the client's end of the connection shut: the
    gateway used to count a 500 and log a traceback; now it is a 499, the client's doing."""
    head = b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"
    _, answer = _raw(limited_server.url, head, b'{"model": "fuzz"}', half_close=True)
    # the gateway's 499, or none: Hypercorn may have met the early end of the body first and
    # answered 400 itself (an empty one) or closed the connection before any answer went out
    assert answer == b"" or answer.startswith((b"HTTP/1.1 499 ", b"HTTP/1.1 400 ")), answer
    for _ in range(100):
        if "POST /api/generate 499" in limited_server.log.read_text():
            break
        time.sleep(0.05)
    else:
        raise AssertionError("no access-log line with a 499")
    metrics = httpx.get(f"{limited_server.url}/metrics").text
    assert 'status="500"' not in metrics
    assert "Traceback" not in limited_server.log.read_text()


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


HOSTILE: list[tuple[str, str, str, int, str]] = [
    # path, body (raw JSON text), status, a fragment of the error
    *[
        (path, ENDPOINTS[path][0], _nested(5000), 400, "nests more than 100 levels")
        for path in ENDPOINTS
    ],
    (
        "/api/chat",
        "POST",
        json.dumps({**CHAT, "stream": False})[:-1] + ', "format": ' + "[" * 150 + "]" * 150 + "}",
        400,
        "nests more than 100 levels",
    ),
    *[
        (
            "/api/generate",
            "POST",
            f'{{"model": "fuzz", "prompt": "hi", "options": {{"{name}": {value}}}}}',
            400,
            f'option \\"{name}\\" is out of range',
        )
        for name, value in [
            ("num_ctx", "1e308"),
            ("num_ctx", str(2**70)),
            ("num_batch", str(2**64)),
            ("num_predict", str(-(2**64))),
            ("temperature", "1e308"),
            ("seed", str(2**64)),
        ]
    ],
    ("/v1/chat/completions", "POST", json.dumps({**CHAT, "tools": [[1]]}), 400,
     "only function tools with a name are supported"),
    ("/v1/chat/completions", "POST", json.dumps({**CHAT, "max_tokens": 2**70}), 400,
     "out of range"),
    ("/v1/completions", "POST", json.dumps({"model": MODEL, "prompt": "hi", "max_tokens": 2**64}),
     400, "out of range"),
    ("/v1/responses", "POST", json.dumps({"model": MODEL, "input": "hi",
                                          "max_output_tokens": 2**70}), 400, "out of range"),
    ("/v1/messages", "POST", json.dumps({**CHAT, "max_tokens": 2**70}), 400, "out of range"),
    ("/api/generate", "POST", json.dumps({"model": MODEL, "prompt": "hi", "context": [2**70]}),
     400, "<= 2147483647"),
    ("/api/generate", "POST", json.dumps({"model": MODEL, "prompt": "hi", "context": [99999999]}),
     400, "token id 99999999"),
    ("/v1/completions", "POST", json.dumps({"model": MODEL, "prompt": [99999999]}), 400,
     "token id 99999999 is out of range"),
    ("/v1/completions", "POST", json.dumps({"model": MODEL, "prompt": [2**70]}), 400,
     "out of range"),
    ("/api/generate", "POST", json.dumps({"model": MODEL, "prompt": "hi", "stream": False,
                                          "template": "{{range $i := 100000000}}x{{end}}"}),
     400, "exceeds 2000000 steps"),
]  # fmt: skip


def test_hostile_bodies_are_4xx_that_say_why(limited_server: Server) -> None:
    wrong: list[Any] = []
    with httpx.Client(base_url=limited_server.url, timeout=60) as client:
        for path, method, body, status, fragment in HOSTILE:
            r = client.request(method, path, content=body.encode())
            if r.status_code != status or fragment not in r.text:
                wrong.append((path, body[:120], r.status_code, r.text[:300]))
        assert not wrong, wrong
        ok = {"model": MODEL, "prompt": "hi", "stream": False}
        r = client.post("/api/generate", json={**ok, "options": {"num_thread": 100000}})
        assert r.status_code == 200, r.text  # clamped to the CPUs there are


@pytest.mark.parametrize("keep_alive", [1e308, 2**70, "9999999999h"])
def test_a_keep_alive_past_forever_is_forever(limited_server: Server, keep_alive: Any) -> None:
    body = {"model": MODEL, "prompt": "hi", "stream": False, "keep_alive": keep_alive}
    r = httpx.post(f"{limited_server.url}/api/generate", json=body, timeout=30)
    if isinstance(keep_alive, str):  # past Go's longest duration: Go's own error
        assert (r.status_code, r.json()) == (
            400,
            {"error": f'time: invalid duration "{keep_alive}"'},
        )
        return
    assert r.status_code == 200, r.text
    ps = httpx.get(f"{limited_server.url}/api/ps", timeout=30)
    assert ps.status_code == 200, ps.text
    (entry,) = ps.json()["models"]
    expires = datetime.datetime.fromisoformat(entry["expires_at"])
    assert expires.year > datetime.datetime.now().year + 200
