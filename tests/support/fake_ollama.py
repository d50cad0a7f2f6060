"""A tiny canned Ollama HTTP server, in a thread of the test process, for CLI tests.

Each test registers the JSON it should answer with; every request is recorded. It never runs
inside `CliRunner` (which only swaps the standard streams).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeOllama", "Reply", "ScriptedLines", "serve_fake"]

Reply = tuple[int, Any]  # (status, JSON body | list of NDJSON objects | None)


class FakeOllama:
    """Canned answers keyed by (method, path); records every request it gets."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Reply | Callable[[Any], Reply]] = {
            ("HEAD", "/"): (200, None),
            ("GET", "/api/version"): (200, {"version": "9.9.9"}),
        }
        self.requests: list[tuple[str, str, Any]] = []
        self.url = ""

    def on(self, method: str, path: str, reply: Reply | Callable[[Any], Reply]) -> None:
        self.routes[(method, path)] = reply

    def bodies(self, method: str, path: str) -> list[Any]:
        return [body for m, p, body in self.requests if (m, p) == (method, path)]


def _handler(fake: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            fake.requests.append((self.command, self.path, body))
            reply = fake.routes.get((self.command, self.path), (404, {"error": "not found"}))
            status, payload = reply(body) if callable(reply) else reply
            if isinstance(payload, list):
                data = b"".join(json.dumps(item).encode() + b"\n" for item in payload)
                kind = "application/x-ndjson"
            else:
                data = b"" if payload is None else json.dumps(payload).encode()
                kind = "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def serve_fake() -> Iterator[FakeOllama]:
    state = FakeOllama()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class ScriptedLines:
    """The REPL's `LineReader` for tests: typed lines from a script, then Ctrl+D (EOFError)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self.enabled = True
        self.prompts: list[str] = []
        self.recorded: list[str] = []

    def read_line(self, prompt: str) -> str:
        self.prompts.append(prompt)
        try:
            return next(self._lines)
        except StopIteration:
            raise EOFError from None

    def record(self, line: str) -> None:
        if self.enabled:
            self.recorded.append(line)
