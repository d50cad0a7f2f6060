# mypy: disable-error-code="import-not-found,import-untyped,untyped-decorator"
"""pydantic-ai's OpenAI chat model pointed at ``power serve``'s ``/v1``."""

from __future__ import annotations

import anyio
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse, ToolCallPart, ToolReturnPart
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings

from tests.clients.served import AFTER_WEATHER, CALL_WEATHER, CITY, SCRIPTED, WEATHER, Power

pytestmark = pytest.mark.client("pydantic-ai-slim")

LIMIT = 8


def model(pw: Power, name: str) -> OpenAIChatModel:
    return OpenAIChatModel(name, provider=OpenAIProvider(base_url=pw.v1, api_key="unused"))


def test_run_and_run_stream(smollm2: Power) -> None:
    """/v1/chat/completions, run_sync and run_stream: usage equal to the server's, finish_reason"""
    settings = ModelSettings(max_tokens=LIMIT, temperature=0, seed=7)
    agent = Agent(model(smollm2, "smollm2"), model_settings=settings)
    mark = smollm2.mark()
    whole = agent.run_sync("Name a colour.")

    async def stream() -> tuple[list[str], ModelResponse]:
        async with agent.run_stream("Name a colour.") as run:
            deltas = [d async for d in run.stream_text(delta=True)]
        last = run.all_messages()[-1]
        assert isinstance(last, ModelResponse)
        return deltas, last

    deltas, streamed = anyio.run(stream)
    first, second = smollm2.since(mark, 2)

    reply = whole.all_messages()[-1]
    assert isinstance(reply, ModelResponse)
    assert whole.output
    assert (whole.usage.input_tokens, whole.usage.output_tokens) == (
        first.prompt_tokens,
        first.output_tokens,
    )
    assert reply.finish_reason == ("length" if first.output_tokens == LIMIT else "stop")
    assert "".join(deltas) == whole.output  # greedy and seeded
    assert (streamed.usage.input_tokens, streamed.usage.output_tokens) == (
        second.prompt_tokens,
        second.output_tokens,
    )
    assert streamed.finish_reason == reply.finish_reason
    assert (first.route, second.route) == ("/v1/chat/completions", "/v1/chat/completions")


def test_tool_loop(scripted: Power) -> None:
    """a tool-using agent: the tool runs with the model's arguments, the loop completes, usage"""
    agent = Agent(model(scripted, SCRIPTED))
    calls: list[str] = []

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return WEATHER

    mark = scripted.mark()
    result = agent.run_sync(CALL_WEATHER)
    asked, answered = scripted.since(mark, 2)

    assert calls == [CITY]
    assert result.output == AFTER_WEATHER
    _, first, back, second = result.all_messages()
    assert isinstance(first, ModelResponse)
    assert isinstance(second, ModelResponse)
    (call,) = first.parts
    assert isinstance(call, ToolCallPart)
    assert (call.tool_name, call.args_as_dict()) == ("get_weather", {"city": CITY})
    assert first.finish_reason == "tool_call"
    assert second.finish_reason == "stop"
    (ret,) = back.parts
    assert isinstance(ret, ToolReturnPart)
    assert (ret.tool_call_id, ret.content) == (call.tool_call_id, WEATHER)
    assert result.usage.requests == 2
    assert result.usage.tool_calls == 1
    assert (result.usage.input_tokens, result.usage.output_tokens) == (
        asked.prompt_tokens + answered.prompt_tokens,
        asked.output_tokens + answered.output_tokens,
    )
