"""The official ``anthropic`` Python SDK against ``power serve``: the real SmolLM2, greedy.

This SDK has no sampling arguments of its own any more; greedy sampling goes through
A3S Power's ``options`` extension in ``extra_body``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest
from anthropic.types import MessageParam

from tests.support.server import Server, power_server

GREEDY = {"options": {"temperature": 0, "seed": 7}}
QUESTION: list[MessageParam] = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def client(server: Server) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0) as c:
        yield c


@pytest.mark.model
def test_count_tokens_then_messages_whole_and_streamed(client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(
        model="smollm2", system="You are terse.", messages=QUESTION
    )
    whole = client.messages.create(
        model="smollm2", max_tokens=16, system="You are terse.", messages=QUESTION,
        extra_body=GREEDY,
    )  # fmt: skip
    assert whole.id.startswith("msg_")
    assert whole.role == "assistant"
    (block,) = whole.content
    assert block.type == "text"
    assert block.text
    assert whole.stop_reason in ("end_turn", "max_tokens")
    # The first request on a fresh server evaluates the whole prompt, which count_tokens
    # counted with the model's own tokenizer and template.
    assert whole.usage.input_tokens == counted.input_tokens
    assert 0 < whole.usage.output_tokens <= 16

    with client.messages.stream(
        model="smollm2", max_tokens=16, system="You are terse.", messages=QUESTION,
        extra_body=GREEDY,
    ) as stream:  # fmt: skip
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_delta" in kinds
    assert final.content[0].type == "text"
    assert final.content[0].text == block.text  # greedy: reproducible
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens

    longer = client.messages.count_tokens(
        model="smollm2", system="You are terse.", messages=[
            {"role": "user", "content": "What is the capital of France? And of Spain?"}],
    )  # fmt: skip
    assert longer.input_tokens > counted.input_tokens


@pytest.mark.model
def test_stop_sequences_report_which_one_stopped(client: anthropic.Anthropic) -> None:
    free = client.messages.create(
        model="smollm2", max_tokens=16, messages=QUESTION, extra_body=GREEDY
    )
    text = free.content[0].text  # type: ignore[union-attr]
    words = text.split()
    assert len(words) >= 3, text
    stop = words[2]
    cut = client.messages.create(
        model="smollm2", max_tokens=16, messages=QUESTION, extra_body=GREEDY,
        stop_sequences=["<never>", stop],
    )  # fmt: skip
    assert cut.stop_reason == "stop_sequence"
    assert cut.stop_sequence == stop
    assert cut.content[0].text == text[: text.index(stop)]  # type: ignore[union-attr]
    assert 0 < cut.usage.output_tokens < free.usage.output_tokens
    assert cut.usage.input_tokens == free.usage.input_tokens
    with client.messages.stream(
        model="smollm2", max_tokens=16, messages=QUESTION, extra_body=GREEDY,
        stop_sequences=[stop],
    ) as stream:  # fmt: skip
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == text[: text.index(stop)]
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)


@pytest.mark.model
def test_tool_results_and_errors(client: anthropic.Anthropic, server: Server) -> None:
    history: list[MessageParam] = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21 C"}]},
    ]  # fmt: skip
    reply = client.messages.create(
        model="smollm2", max_tokens=8, messages=history, extra_body=GREEDY
    )
    assert reply.content
    with pytest.raises(anthropic.BadRequestError, match="does not support tools"):
        client.messages.create(
            model="smollm2", max_tokens=8, messages=QUESTION,
            tools=[{"name": "weather", "input_schema": {"type": "object"}}],
        )  # fmt: skip
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="no-such-model", max_tokens=8, messages=QUESTION)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=QUESTION)
    resp = httpx.post(f"{server.url}/v1/messages", json={"model": "smollm2", "messages": []})
    assert resp.status_code == 400
    body = resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


@pytest.fixture
def crashing_server(server_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    env = dict(server_env, A3S_POWER_RUNNER_ENGINE="fake:count?delay=0.01&crash_after=4")
    with power_server(env, tmp_path / "server.log") as srv:
        yield srv


def test_a_mid_stream_failure_is_an_error_event(crashing_server: Server) -> None:
    url = crashing_server.url
    with anthropic.Anthropic(base_url=url, api_key="x", max_retries=0) as client:
        got: list[str] = []

        def consume() -> None:
            with client.messages.stream(model="smollm2", max_tokens=50, messages=QUESTION) as s:
                got.extend(s.text_stream)

        with pytest.raises(anthropic.APIStatusError, match="runner"):
            consume()
    seen = "".join(got).split()
    assert seen  # the first tokens always arrive; the last few may die with the runner
    assert seen == ["1", "2", "3", "4"][: len(seen)]
