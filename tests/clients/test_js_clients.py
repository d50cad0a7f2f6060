"""npm clients against ``power serve``: @langchain/ollama and the Vercel AI SDK.

Each case is a node script in ``js/`` (installed by ``npm ci`` in the nox session) that prints
what the client reported as one JSON object; the assertions live here, next to the server's
own counts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.clients.served import (
    AFTER_WEATHER,
    CALL_WEATHER,
    CITY,
    JS_DIR,
    SCRIPTED,
    WEATHER,
    WEATHER_SCHEMA,
    Power,
    Served,
    close_to,
    finish_for,
)

LIMIT = 8  # the scripts' num_predict


def node(script: str, case: str, pw: Power, model: str) -> Any:
    exe = shutil.which("node")
    assert exe, "node is not installed"
    env = dict(
        os.environ,
        CALL_WEATHER=CALL_WEATHER,
        WEATHER=WEATHER,
        WEATHER_SCHEMA=json.dumps(WEATHER_SCHEMA),
    )
    done = subprocess.run(
        [exe, JS_DIR / script, case, pw.url, model],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def lc_usage(served: Served) -> dict[str, Any]:
    return {
        "input_tokens": served.prompt_tokens,
        "output_tokens": served.output_tokens,
        "total_tokens": served.total_tokens,
    }


def ai_usage(served: Served) -> dict[str, int]:
    return {
        "inputTokens": served.prompt_tokens,
        "outputTokens": served.output_tokens,
        "totalTokens": served.total_tokens,
    }


def without_details(usage: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in usage.items() if not k.endswith("_details")}


@pytest.mark.client("npm:@langchain/ollama")
def test_langchain_invoke_and_stream(smollm2: Power) -> None:
    """invoke and stream: the text, usage_metadata equal to the server's counts, done_reason"""
    mark = smollm2.mark()
    out = node("langchain.mjs", "chat", smollm2, "smollm2")
    first, second = smollm2.since(mark, 2)
    whole, streamed = out["whole"], out["streamed"]
    assert whole["content"]
    assert streamed["content"] == whole["content"]  # greedy and seeded
    assert without_details(whole["usage"]) == lc_usage(first)
    assert without_details(streamed["usage"]) == lc_usage(second)
    assert whole["done_reason"] == finish_for(first, LIMIT)
    assert streamed["done_reason"] == finish_for(second, LIMIT)


@pytest.mark.client("npm:@langchain/ollama")
def test_langchain_tool_call_round_trip(scripted: Power) -> None:
    """bindTools: the tool call's name and arguments, and the answer to its result"""
    mark = scripted.mark()
    out = node("langchain.mjs", "tools", scripted, SCRIPTED)
    asked, answered = scripted.since(mark, 2)
    assert out["tool_calls"] == [{"name": "get_weather", "args": {"city": CITY}}]
    assert out["answer"] == AFTER_WEATHER
    assert without_details(out["asked_usage"]) == lc_usage(asked)
    assert without_details(out["answer_usage"]) == lc_usage(answered)


@pytest.mark.client("npm:@langchain/ollama")
def test_langchain_embeddings(smollm2: Power) -> None:
    """OllamaEmbeddings: documents and query embed to the vectors /api/embed returns"""
    out = node("langchain.mjs", "embeddings", smollm2, "smollm2")
    want = smollm2.embed("smollm2", ["red", "a green leaf"])
    assert all(close_to(got, exp) for got, exp in zip(out["documents"], want, strict=True))
    assert close_to(out["query"], want[0])


@pytest.mark.client("npm:ai", "npm:ollama-ai-provider-v2")
def test_ai_sdk_generate_and_stream_text(smollm2: Power) -> None:
    """generateText and streamText: the text, usage equal to the server's counts, finishReason"""
    mark = smollm2.mark()
    whole = node("ai_sdk.mjs", "generate", smollm2, "smollm2")
    streamed = node("ai_sdk.mjs", "stream", smollm2, "smollm2")
    first, second = smollm2.since(mark, 2)
    assert whole["text"]
    assert streamed["text"] == whole["text"]  # greedy and seeded
    assert "".join(streamed["deltas"]) == whole["text"]
    assert whole["usage"] == ai_usage(first)
    assert streamed["usage"] == ai_usage(second)
    assert whole["finishReason"] == finish_for(first, LIMIT)
    assert streamed["finishReason"] == finish_for(second, LIMIT)


@pytest.mark.client("npm:ai", "npm:ollama-ai-provider-v2")
def test_ai_sdk_tool_loop(scripted: Power) -> None:
    """generateText with a tool: tool-calls step (name, input, result), then the final answer"""
    mark = scripted.mark()
    out = node("ai_sdk.mjs", "tools", scripted, SCRIPTED)
    asked, answered = scripted.since(mark, 2)
    assert out["calls"] == [CITY]
    assert out["text"] == AFTER_WEATHER
    step1, step2 = out["steps"]
    assert step1["finishReason"] == "tool-calls"
    assert step1["toolCalls"] == [{"toolName": "get_weather", "input": {"city": CITY}}]
    assert step1["toolResults"] == [{"toolName": "get_weather", "output": WEATHER}]
    assert step2["finishReason"] == "stop"
    assert step2["toolCalls"] == []
    assert (step1["usage"], step2["usage"]) == (ai_usage(asked), ai_usage(answered))
