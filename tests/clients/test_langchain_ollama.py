# mypy: disable-error-code="import-not-found,import-untyped,untyped-decorator"
"""langchain-ollama (``ChatOllama``, ``OllamaEmbeddings``) against ``power serve``."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama, OllamaEmbeddings
from pydantic import BaseModel

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

pytestmark = pytest.mark.client("langchain-ollama")

LIMIT = 8
QUESTION = "Name a colour."


def usage_of(served: Served) -> dict[str, int]:
    return {
        "input_tokens": served.prompt_tokens,
        "output_tokens": served.output_tokens,
        "total_tokens": served.total_tokens,
    }


def chat(pw: Power, limit: int = LIMIT) -> ChatOllama:
    return ChatOllama(model="smollm2", base_url=pw.url, temperature=0, seed=7, num_predict=limit)


def test_invoke_and_stream(smollm2: Power) -> None:
    """invoke and stream: the text, token usage equal to the server's counts, done_reason"""
    llm = chat(smollm2)
    mark = smollm2.mark()
    whole = llm.invoke(QUESTION)
    chunks = list(llm.stream(QUESTION))
    first, second = smollm2.since(mark, 2)

    assert isinstance(whole, AIMessage)
    assert whole.content
    assert whole.usage_metadata == usage_of(first)
    assert whole.response_metadata["done_reason"] == finish_for(first, LIMIT)

    streamed = sum(chunks[1:], chunks[0])
    assert isinstance(streamed, AIMessageChunk)
    assert streamed.content == whole.content  # greedy and seeded: the same reply
    assert streamed.usage_metadata == usage_of(second)
    assert streamed.response_metadata["done_reason"] == finish_for(second, LIMIT)
    assert (first.route, second.route) == ("/api/chat", "/api/chat")


class Colour(BaseModel):
    name: str


def test_structured_output(smollm2: Power) -> None:
    """with_structured_output: a JSON-schema-constrained reply parsed into a pydantic model"""
    llm = chat(smollm2, limit=32).with_structured_output(Colour, include_raw=True)
    mark = smollm2.mark()
    out = llm.invoke("Name a colour. Answer in JSON.")
    (served,) = smollm2.since(mark, 1)
    assert isinstance(out, dict)
    assert out["parsing_error"] is None
    assert isinstance(out["parsed"], Colour)
    assert out["parsed"].name
    assert out["raw"].usage_metadata == usage_of(served)


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return WEATHER


def test_tool_call_round_trip(scripted: Power) -> None:
    """bind_tools: the model's tool call (name, arguments) and the answer after the result"""
    llm = ChatOllama(model=SCRIPTED, base_url=scripted.url).bind_tools([get_weather])
    mark = scripted.mark()
    messages: list[HumanMessage | AIMessage | ToolMessage] = [HumanMessage(CALL_WEATHER)]
    asked = llm.invoke(messages)
    assert isinstance(asked, AIMessage)
    (call,) = asked.tool_calls
    assert (call["name"], call["args"]) == ("get_weather", {"city": CITY})
    result = get_weather.invoke(call)
    assert isinstance(result, ToolMessage)
    messages += [asked, result]
    answer = llm.invoke(messages)
    first, second = scripted.since(mark, 2)

    assert asked.usage_metadata == usage_of(first)
    assert asked.response_metadata["done_reason"] == "stop"
    assert answer.content == AFTER_WEATHER
    assert not answer.tool_calls
    assert answer.usage_metadata == usage_of(second)


def test_embeddings(smollm2: Power) -> None:
    """OllamaEmbeddings: documents and query embed to the vectors /api/embed returns"""
    emb = OllamaEmbeddings(model="smollm2", base_url=smollm2.url)
    texts = ["red", "a green leaf"]
    docs = emb.embed_documents(texts)
    query = emb.embed_query("red")
    want = smollm2.embed("smollm2", texts)
    assert len(docs) == 2
    assert all(close_to(got, exp) for got, exp in zip(docs, want, strict=True))
    assert close_to(query, want[0])
    assert len(query) == 576  # SmolLM2-135M's hidden size
