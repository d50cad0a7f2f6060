"""Wire parity with Ollama (and the OpenAI / Anthropic shapes) that clients read: token
accounting, the Responses API's terminal event, /api/version, /api/tags and /api/show extras,
``_debug_render_only`` and the error wording clients parse. The real app over scripted runners.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from power import __version__
from power.api.ps import OLLAMA_VERSION
from power.create.build import create_model
from power.errors import PowerError
from power.settings import Settings
from power.store.store import ModelStore
from proto import Done, Msg, Stats, Tokens
from tests.support.app import PLAIN, TestClient, app_client
from tests.support.gguf import tiny_gguf
from tests.support.runners import ScriptedRunners
from tests.support.synth import write_gguf

TOOLS_TEMPLATE = (
    "{{- if .Tools }}<tools>{{ range .Tools }}{{ json .Function }}{{ end }}</tools>{{ end }}"
    "{{- range .Messages }}<|{{ .Role }}|>{{ .Content }}{{ end }}<|assistant|>"
)
USER = [{"role": "user", "content": "hi"}]
# What a runner reports for a 32-token prompt of which 31 were reused from its KV cache.
CACHED = Stats(prompt_tokens=32, prompt_cached=31, prompt_eval_s=0.002, eval_tokens=2, eval_s=0.01)


def _script(
    *texts: str, reason: Literal["stop", "length"] = "stop", stats: Stats = CACHED
) -> list[list[Msg] | PowerError]:
    out: list[list[Msg] | PowerError] = [
        [Tokens(id=1, text=t, ids=(i,))] for i, t in enumerate(texts, 1)
    ]
    return [*out, [Done(id=1, reason=reason, stats=stats)]]


@pytest.fixture
def sup() -> ScriptedRunners:
    runners = ScriptedRunners()
    runners.script = _script("Hello", " there")
    return runners


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    gguf = store.add_blob_from_file(tiny_gguf(tmp_path / "tiny.gguf"))
    for name, spec in (
        ("plain", {"from": gguf, "template": PLAIN}),
        ("tooly", {"from": gguf, "template": TOOLS_TEMPLATE}),
        ("rendered", {"from": gguf, "template": PLAIN, "renderer": "qwen3-coder",
                      "parser": "qwen3-coder", "requires": "0.12.0"}),
    ):  # fmt: skip
        for _ in create_model(store, name, spec):
            pass
    return store


@pytest.fixture
def client(tmp_path: Path, sup: ScriptedRunners, store: ModelStore) -> Iterator[TestClient]:
    with app_client(Settings(home=str(tmp_path)), sup, store) as c:
        yield c


def _lines(resp: Any) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    return [json.loads(line) for line in resp.text.splitlines()]


def _events(resp: Any) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of a named-event SSE body."""
    assert resp.status_code == 200, resp.text
    out = []
    for block in resp.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields.get("event", ""), json.loads(fields["data"])))
    return out


# -- token accounting ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [("/api/generate", {"prompt": "hi"}), ("/api/chat", {"messages": USER})],
)
@pytest.mark.parametrize("stream", [True, False])
def test_prompt_eval_count_is_the_whole_prompt(
    client: TestClient, path: str, body: dict[str, Any], stream: bool
) -> None:
    resp = client.post(path, json={"model": "plain", "stream": stream, **body})
    final = _lines(resp)[-1]
    assert final["prompt_eval_count"] == 32  # cached and evaluated, as Ollama counts it
    assert final["prompt_cache_count"] == 31  # A3S Power's extra: how many were reused
    assert final["prompt_eval_duration"] == 2_000_000  # the evaluated part's time alone
    assert final["eval_count"] == 2


def test_a_fresh_prompt_has_no_cache_count(client: TestClient, sup: ScriptedRunners) -> None:
    sup.script = _script("x", stats=Stats(prompt_tokens=5, prompt_eval_s=0.001, eval_tokens=1))
    body = {"model": "plain", "prompt": "hi", "stream": False}
    final = client.post("/api/generate", json=body).json()
    assert final["prompt_eval_count"] == 5
    assert "prompt_cache_count" not in final


def test_openai_usage_counts_the_whole_prompt_with_the_cached_part(client: TestClient) -> None:
    body = {"model": "plain", "messages": USER}
    usage = client.post("/v1/chat/completions", json=body).json()["usage"]
    assert usage == {"prompt_tokens": 32, "completion_tokens": 2, "total_tokens": 34,
                     "prompt_tokens_details": {"cached_tokens": 31}}  # fmt: skip
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    raw = client.post("/v1/chat/completions", json=stream).text
    payloads = [line[6:] for line in raw.splitlines() if line.startswith("data: {")]
    assert json.loads(payloads[-1])["usage"] == usage
    legacy = client.post("/v1/completions", json={"model": "plain", "prompt": "hi"}).json()
    assert legacy["usage"] == usage


def test_responses_and_anthropic_usage_count_the_whole_prompt(client: TestClient) -> None:
    whole = client.post("/v1/responses", json={"model": "plain", "input": "hi"}).json()
    assert whole["usage"]["input_tokens"] == 32
    assert whole["usage"]["input_tokens_details"] == {"cached_tokens": 31}
    assert whole["usage"]["total_tokens"] == 34
    msg = {"model": "plain", "max_tokens": 10, "messages": USER}
    usage = client.post("/v1/messages", json=msg).json()["usage"]
    # Anthropic's cache_read_input_tokens is *added* to input_tokens by its clients, so the
    # whole prompt goes in input_tokens alone (as Ollama does) to avoid counting it twice.
    assert usage == {"input_tokens": 32, "output_tokens": 2}


def test_metrics_count_the_whole_prompt(client: TestClient) -> None:
    client.post("/api/generate", json={"model": "plain", "prompt": "hi", "stream": False})
    text = client.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("power_inference_tokens_total{")
                and 'type="input"' in x)  # fmt: skip
    assert line.endswith(" 32.0")


# -- /v1/responses at max_output_tokens ------------------------------------------------------


def test_responses_cut_at_max_output_tokens_end_with_response_incomplete(
    client: TestClient, sup: ScriptedRunners
) -> None:
    sup.script = _script("Hel", "lo", reason="length")
    body = {"model": "plain", "input": "hi", "max_output_tokens": 2}
    whole = client.post("/v1/responses", json=body).json()
    assert whole["status"] == "incomplete"
    assert whole["incomplete_details"] == {"reason": "max_output_tokens"}
    assert whole["output"][0]["status"] == "incomplete"
    events = _events(client.post("/v1/responses", json={**body, "stream": True}))
    names = [name for name, _ in events]
    assert names[-1] == "response.incomplete"
    assert "response.completed" not in names
    last = events[-1][1]
    assert last["type"] == "response.incomplete"
    final = last["response"]
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    done = next(d for name, d in events if name == "response.output_item.done")
    assert done["item"]["status"] == "incomplete"
    # the streamed terminal body is the non-streamed body, ids and times aside
    for key in ("id", "created_at"):
        final.pop(key), whole.pop(key)
    for item in (*final["output"], *whole["output"]):
        item.pop("id")
    assert final == whole


def test_responses_that_finish_end_with_response_completed(client: TestClient) -> None:
    body = {"model": "plain", "input": "hi", "stream": True}
    events = _events(client.post("/v1/responses", json=body))
    assert events[-1][0] == "response.completed"
    assert events[-1][1]["response"]["status"] == "completed"
    assert events[-1][1]["response"]["incomplete_details"] is None


# -- /api/version ----------------------------------------------------------------------------


def test_version_reports_the_ollama_api_version_and_power_s_own(client: TestClient) -> None:
    resp = client.get("/api/version")
    assert resp.json() == {"version": OLLAMA_VERSION, "power_version": __version__}
    major, minor, _ = (int(x) for x in OLLAMA_VERSION.split("."))
    assert (major, minor) >= (0, 12)  # clients gate thinking, tools and more on >= 0.x


# -- /api/tags and /api/show -----------------------------------------------------------------


def test_tags_entries_carry_capabilities(client: TestClient) -> None:
    rows = {m["name"]: m for m in client.get("/api/tags").json()["models"]}
    assert rows["plain:latest"]["capabilities"] == ["completion"]
    assert rows["tooly:latest"]["capabilities"] == ["completion", "tools"]
    show = client.post("/api/show", json={"model": "tooly"}).json()
    assert show["capabilities"] == rows["tooly:latest"]["capabilities"]


def test_show_carries_renderer_parser_and_requires_that_create_stored(client: TestClient) -> None:
    show = client.post("/api/show", json={"model": "rendered"}).json()
    assert (show["renderer"], show["parser"], show["requires"]) == (
        "qwen3-coder", "qwen3-coder", "0.12.0",
    )  # fmt: skip
    assert list(show).index("parser") < list(show).index("details")  # Ollama's field order
    assert list(show)[-1] == "requires"
    assert "\nRENDERER qwen3-coder\nPARSER qwen3-coder\n" in show["modelfile"]
    plain = client.post("/api/show", json={"model": "plain"}).json()
    assert not {"renderer", "parser", "requires"} & set(plain)
    assert "RENDERER" not in plain["modelfile"]


# -- _debug_render_only ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_debug_render_only_returns_the_rendered_prompt_and_runs_nothing(
    client: TestClient, sup: ScriptedRunners, stream: bool
) -> None:
    body = {"model": "plain", "stream": stream, "_debug_render_only": True}
    gen = client.post("/api/generate", json={**body, "prompt": "hi"})
    assert gen.headers["content-type"] == "application/json; charset=utf-8"
    got = gen.json()
    assert got.pop("created_at")
    assert got == {"model": "plain", "response": "", "done": False,
                   "_debug_info": {"rendered_template": "<|user|>hi <|assistant|>"}}  # fmt: skip
    chat = client.post("/api/chat", json={**body, "messages": USER}).json()
    assert chat["message"] == {"role": "", "content": ""}
    assert chat["done"] is False
    assert chat["_debug_info"] == {"rendered_template": "<|user|>hi <|assistant|>"}
    assert sup.generations() == []  # nothing reached a runner


# -- the error wording clients match -----------------------------------------------------------


def test_capability_errors_use_ollamas_wording(client: TestClient, tmp_path: Path) -> None:
    def error(path: str, **body: Any) -> tuple[int, str]:
        resp = client.post(path, json=body)
        return resp.status_code, resp.json()["error"]

    tool = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert error("/api/chat", model="plain", messages=USER, tools=tool) == (
        400, "registry.ollama.ai/library/plain:latest does not support tools",
    )  # fmt: skip
    assert error("/api/chat", model="Plain", messages=USER, think=True) == (
        400, '"Plain" does not support thinking',  # the name as requested
    )  # fmt: skip
    assert error("/api/generate", model="plain", prompt="x", think="high") == (
        400, '"plain" does not support thinking',
    )  # fmt: skip
    assert error("/api/generate", model="plain", prompt="def f(", suffix="return 1") == (
        400, "registry.ollama.ai/library/plain:latest does not support insert",
    )  # fmt: skip
    assert error("/api/generate", model="ghost", prompt="x") == (404, "model 'ghost' not found")
    assert error("/api/chat", model="ghost", messages=USER) == (404, "model 'ghost' not found")


def test_an_embedding_model_does_not_support_chat_or_generate(
    client: TestClient, store: ModelStore, tmp_path: Path
) -> None:
    meta = {"general.architecture": "bert", "bert.pooling_type": 1}
    blob = store.add_blob_from_file(write_gguf(tmp_path / "embed.gguf", meta, {}))
    for _ in create_model(store, "embedder", {"from": blob}):
        pass
    chat = client.post("/api/chat", json={"model": "embedder", "messages": USER})
    assert (chat.status_code, chat.json()) == (400, {"error": '"embedder" does not support chat'})
    gen = client.post("/api/generate", json={"model": "embedder", "prompt": "x"})
    assert gen.json() == {"error": '"embedder" does not support generate'}
