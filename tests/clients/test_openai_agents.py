# mypy: disable-error-code="import-not-found,import-untyped,untyped-decorator"
"""openai-agents against ``power serve``'s ``/v1``: the Responses and the Chat Completions model.

Tracing is switched off: its exporter would send every run to OpenAI.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import pytest
from agents import (
    Agent,
    Model,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    RunResult,
    RunResultStreaming,
    function_tool,
    set_tracing_disabled,
)
from agents.exceptions import ModelBehaviorError
from agents.items import MessageOutputItem, ToolCallItem, ToolCallOutputItem
from openai import AsyncOpenAI
from openai.types.responses import ResponseFunctionToolCall

from tests.clients.served import AFTER_WEATHER, CALL_WEATHER, CITY, SCRIPTED, WEATHER, Power

pytestmark = pytest.mark.client("openai-agents")

set_tracing_disabled(True)

LIMIT = 32  # enough for SmolLM2 to finish a one-word answer: a Responses run must complete
ModelFor = Callable[[str, AsyncOpenAI], Model]
# the agent's model class, by the route it calls
MODELS: dict[str, ModelFor] = {
    "/v1/responses": lambda name, c: OpenAIResponsesModel(name, openai_client=c),
    "/v1/chat/completions": lambda name, c: OpenAIChatCompletionsModel(name, openai_client=c),
}


def usage_pairs(result: RunResult | RunResultStreaming) -> list[tuple[int, int]]:
    usage = result.context_wrapper.usage
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    return [(u.input_tokens, u.output_tokens) for u in usage.request_usage_entries]


@pytest.mark.parametrize("route", list(MODELS))
def test_run_and_run_streamed(smollm2: Power, route: str) -> None:
    """Runner.run and run_streamed: the reply, usage equal to the server's counts"""
    make = MODELS[route]
    settings = ModelSettings(max_tokens=LIMIT, temperature=0, include_usage=True)
    brief = "Answer with one word."

    async def main() -> tuple[RunResult, RunResultStreaming]:
        async with AsyncOpenAI(base_url=smollm2.v1, api_key="unused", max_retries=0) as client:
            agent = Agent(
                name="a", instructions=brief, model=make("smollm2", client), model_settings=settings
            )
            whole = await Runner.run(agent, "Name a colour.")
            streamed = Runner.run_streamed(agent, "Name a colour.")
            async for _ in streamed.stream_events():
                pass
            return whole, streamed

    mark = smollm2.mark()
    whole, streamed = anyio.run(main)
    first, second = smollm2.since(mark, 2)

    assert whole.final_output
    assert streamed.final_output == whole.final_output  # greedy: the same reply
    assert usage_pairs(whole) == [(first.prompt_tokens, first.output_tokens)]
    assert usage_pairs(streamed) == [(second.prompt_tokens, second.output_tokens)]
    assert (first.route, second.route) == (route, route)


@pytest.mark.parametrize("route", list(MODELS))
def test_tool_loop(scripted: Power, route: str) -> None:
    """a function tool: called with the model's arguments, its output answered, usage per turn"""
    make = MODELS[route]
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return WEATHER

    async def main() -> RunResult:
        async with AsyncOpenAI(base_url=scripted.v1, api_key="unused", max_retries=0) as client:
            agent = Agent(name="t", model=make(SCRIPTED, client), tools=[get_weather])
            return await Runner.run(agent, CALL_WEATHER)

    mark = scripted.mark()
    result = anyio.run(main)
    asked, answered = scripted.since(mark, 2)

    assert calls == [CITY]
    assert result.final_output == AFTER_WEATHER
    call_item, output_item, message = result.new_items
    assert isinstance(call_item, ToolCallItem)
    assert isinstance(output_item, ToolCallOutputItem)
    assert isinstance(message, MessageOutputItem)
    call = call_item.raw_item
    assert isinstance(call, ResponseFunctionToolCall)
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": CITY})
    assert output_item.output == WEATHER
    assert usage_pairs(result) == [
        (asked.prompt_tokens, asked.output_tokens),
        (answered.prompt_tokens, answered.output_tokens),
    ]
    assert (asked.route, answered.route) == (route, route)


def test_responses_cut_at_max_output_tokens(smollm2: Power) -> None:
    """a /v1/responses reply cut at max_output_tokens: the same error, streamed or not"""
    settings = ModelSettings(max_tokens=1, temperature=0)
    errors: list[str] = []

    async def main() -> None:
        async with AsyncOpenAI(base_url=smollm2.v1, api_key="unused", max_retries=0) as client:
            agent = Agent(
                name="a", model=OpenAIResponsesModel("smollm2", client), model_settings=settings
            )
            with pytest.raises(ModelBehaviorError) as whole:
                await Runner.run(agent, "Name a colour.")
            errors.append(str(whole.value))
            streamed = Runner.run_streamed(agent, "Name a colour.")
            with pytest.raises(ModelBehaviorError) as cut:
                async for _ in streamed.stream_events():
                    pass
            errors.append(str(cut.value))

    anyio.run(main)
    assert all("response.incomplete" in e and "max_output_tokens" in e for e in errors), errors
