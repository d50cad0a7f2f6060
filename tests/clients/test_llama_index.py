# mypy: disable-error-code="import-not-found,import-untyped,untyped-decorator"
"""llama-index-llms-ollama and llama-index-embeddings-ollama against ``power serve``."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.embeddings.ollama import OllamaEmbedding
from llama_index.llms.ollama import Ollama

from tests.clients.served import (
    AFTER_WEATHER,
    CALL_WEATHER,
    CITY,
    SCRIPTED,
    WEATHER,
    Power,
    Served,
    close_to,
    finish_for,
)

LIMIT = 8
QUESTION = "Name a colour."


def counts(raw: Any) -> tuple[int, int]:
    """The token counts llama-index hands on in a response's ``raw``."""
    usage = raw["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert (raw["prompt_eval_count"], raw["eval_count"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    return usage["prompt_tokens"], usage["completion_tokens"]


def of(served: Served) -> tuple[int, int]:
    return served.prompt_tokens, served.output_tokens


@pytest.mark.client("llama-index-llms-ollama")
def test_chat_complete_and_stream(smollm2: Power) -> None:
    """chat, complete and stream_chat: token usage equal to the server's counts, done_reason"""
    llm = Ollama(
        model="smollm2",
        base_url=smollm2.url,
        temperature=0,
        request_timeout=120,
        context_window=2048,
        additional_kwargs={"num_predict": LIMIT, "seed": 7},
    )
    mark = smollm2.mark()
    chat = llm.chat([ChatMessage(role="user", content=QUESTION)])
    done = llm.complete(QUESTION)
    parts = list(llm.stream_chat([ChatMessage(role="user", content=QUESTION)]))
    s_chat, s_done, s_stream = smollm2.since(mark, 3)

    assert chat.message.content
    assert counts(chat.raw) == of(s_chat)
    assert chat.raw["done_reason"] == finish_for(s_chat, LIMIT)
    assert done.text == chat.message.content  # greedy and seeded, the same messages
    assert counts(done.raw) == of(s_done)
    last = parts[-1]
    assert last.message.content == chat.message.content
    assert "".join(p.delta or "" for p in parts) == chat.message.content
    assert counts(last.raw) == of(s_stream)
    assert last.raw["done_reason"] == finish_for(s_stream, LIMIT)


def get_weather(city: str) -> str:
    """The weather in a city."""
    return WEATHER


@pytest.mark.client("llama-index-llms-ollama")
def test_tool_calls(scripted: Power) -> None:
    """chat_with_tools and predict_and_call: tool name and arguments, tool output, next answer"""
    llm = Ollama(model=SCRIPTED, base_url=scripted.url, request_timeout=60, context_window=2048)
    weather = FunctionTool.from_defaults(get_weather)
    mark = scripted.mark()
    resp = llm.chat_with_tools([weather], user_msg=CALL_WEATHER)
    (selection,) = llm.get_tool_calls_from_response(resp)
    assert (selection.tool_name, selection.tool_kwargs) == ("get_weather", {"city": CITY})
    (served,) = scripted.since(mark, 1)
    assert counts(resp.raw) == of(served)
    assert resp.raw["done_reason"] == "stop"

    out = llm.predict_and_call([weather], user_msg=CALL_WEATHER)
    assert out.response == WEATHER
    (source,) = out.sources
    assert (source.tool_name, source.raw_input["kwargs"]) == ("get_weather", {"city": CITY})

    history = [
        ChatMessage(role="user", content=CALL_WEATHER),
        resp.message,
        ChatMessage(role="tool", content=WEATHER, additional_kwargs={"tool_name": "get_weather"}),
    ]
    answer = llm.chat(history)
    assert answer.message.content == AFTER_WEATHER


@pytest.mark.client("llama-index-embeddings-ollama")
def test_embeddings(smollm2: Power) -> None:
    """OllamaEmbedding: text, query and batch embeddings equal the vectors /api/embed returns"""
    emb = OllamaEmbedding(model_name="smollm2", base_url=smollm2.url)
    texts = ["red", "a green leaf"]
    want = smollm2.embed("smollm2", texts)
    assert close_to(emb.get_text_embedding("red"), want[0])
    assert close_to(emb.get_query_embedding("red"), want[0])
    batch = emb.get_text_embedding_batch(texts)
    assert all(close_to(got, exp) for got, exp in zip(batch, want, strict=True))
