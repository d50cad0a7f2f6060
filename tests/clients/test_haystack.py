# mypy: disable-error-code="import-not-found,import-untyped,untyped-decorator"
"""ollama-haystack (chat generator and embedders) against ``power serve``."""

from __future__ import annotations

import pytest
from haystack.dataclasses import ChatMessage, Document, StreamingChunk
from haystack.tools.tool import Tool
from haystack_integrations.components.embedders.ollama import (
    OllamaDocumentEmbedder,
    OllamaTextEmbedder,
)
from haystack_integrations.components.generators.ollama import OllamaChatGenerator

from tests.clients.served import (
    AFTER_WEATHER,
    CALL_WEATHER,
    CITY,
    SCRIPTED,
    WEATHER,
    WEATHER_SCHEMA,
    Power,
    Served,
    close_to,
)

pytestmark = pytest.mark.client("ollama-haystack")

LIMIT = 8


def usage_of(served: Served) -> dict[str, int]:
    return {
        "prompt_tokens": served.prompt_tokens,
        "completion_tokens": served.output_tokens,
        "total_tokens": served.total_tokens,
    }


def test_chat_streamed_and_not(smollm2: Power) -> None:
    """OllamaChatGenerator, whole and streamed: the reply and its usage equal to the server's"""
    options = {"temperature": 0, "seed": 7, "num_predict": LIMIT}
    chunks: list[StreamingChunk] = []
    whole = OllamaChatGenerator(model="smollm2", url=smollm2.url, generation_kwargs=options)
    streaming = OllamaChatGenerator(
        model="smollm2",
        url=smollm2.url,
        generation_kwargs=options,
        streaming_callback=chunks.append,
    )
    question = [ChatMessage.from_user("Name a colour.")]
    mark = smollm2.mark()
    (reply,) = whole.run(question)["replies"]
    (streamed,) = streaming.run(question)["replies"]
    first, second = smollm2.since(mark, 2)

    assert reply.text
    assert reply.meta["usage"] == usage_of(first)
    assert streamed.text == reply.text  # greedy and seeded
    assert "".join(c.content for c in chunks) == reply.text
    assert streamed.meta["usage"] == usage_of(second)


def test_tool_call_round_trip(scripted: Power) -> None:
    """tools: the ToolCall's name and arguments, finish_reason, and the answer to its result"""
    calls: list[str] = []

    def get_weather(city: str) -> str:
        calls.append(city)
        return WEATHER

    tool = Tool(
        name="get_weather",
        description="The weather in a city.",
        parameters=WEATHER_SCHEMA,
        function=get_weather,
    )
    gen = OllamaChatGenerator(model=SCRIPTED, url=scripted.url, tools=[tool])
    mark = scripted.mark()
    history = [ChatMessage.from_user(CALL_WEATHER)]
    (asked,) = gen.run(history)["replies"]
    (call,) = asked.tool_calls
    assert (call.tool_name, call.arguments) == ("get_weather", {"city": CITY})
    assert asked.meta["finish_reason"] == "stop"
    output = tool.invoke(**call.arguments)
    history += [asked, ChatMessage.from_tool(output, origin=call)]
    (answer,) = gen.run(history)["replies"]
    first, second = scripted.since(mark, 2)

    assert calls == [CITY]
    assert answer.text == AFTER_WEATHER
    assert not answer.tool_calls
    assert asked.meta["usage"] == usage_of(first)
    assert answer.meta["usage"] == usage_of(second)


def test_embedders(smollm2: Power) -> None:
    """OllamaTextEmbedder and OllamaDocumentEmbedder: the vectors /api/embed returns"""
    texts = ["red", "a green leaf"]
    want = smollm2.embed("smollm2", texts)
    text = OllamaTextEmbedder(model="smollm2", url=smollm2.url).run("red")["embedding"]
    assert isinstance(text, list)
    assert close_to(text, want[0])
    embedder = OllamaDocumentEmbedder(model="smollm2", url=smollm2.url, progress_bar=False)
    docs = embedder.run([Document(content=t) for t in texts])["documents"]
    assert isinstance(docs, list)
    got = [d.embedding for d in docs]
    assert all(close_to(g or [], w) for g, w in zip(got, want, strict=True))
