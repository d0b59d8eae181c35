"""The fake Anthropic server speaks the real wire format: the official ``anthropic`` SDK parses all it sends."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from tests.fakes.anthropic import KEY, FakeAnthropic

WEATHER = {"name": "weather", "description": "Weather in a city", "input_schema": {"type": "object"}}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def client(fake: FakeAnthropic) -> anthropic.Anthropic:
    fake.reset()
    return anthropic.Anthropic(base_url=fake.base_url, api_key=KEY, max_retries=0)


def test_whole_message_parses(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "hello there"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 7


def test_text_stream_parses(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "one two"}]
    ) as stream:
        assert "".join(stream.text_stream) == "echo: one two"
        final = stream.get_final_message()
    assert final.usage.input_tokens == 11 and final.usage.output_tokens == 7


def test_tool_input_stream_parses(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=50,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        final = stream.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use" and block.input == {"city": "Paris"} and final.stop_reason == "tool_use"


def test_errors_parse_as_the_sdk_classes(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    fake.failures.append((429, "rate_limit_error", {"retry-after": "3"}))
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert limited.value.response.headers["retry-after"] == "3"
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        client.messages.create(model="claude-overloaded", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_model_list_parses(client: anthropic.Anthropic) -> None:
    assert [model.id for model in client.models.list()] == ["claude-haiku-4-5", "claude-sonnet-4-5"]
