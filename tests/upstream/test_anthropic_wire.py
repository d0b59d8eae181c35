"""The chat-to-Messages translation rules, one at a time, and the upstream's own calls over a real socket."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from gateway.errors import InvalidRequest, UpstreamError, UpstreamStatus
from gateway.metrics import Metrics
from gateway.settings import UpstreamSettings
from gateway.upstream.anthropic import AnthropicUpstream
from gateway.upstream.anthropic_stream import StreamTranslator, openai_error_body
from gateway.upstream.anthropic_wire import to_chat_completion, to_messages_request
from tests.fakes.anthropic import KEY, FakeAnthropic


def _text(text: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": text}]


def test_system_messages_anywhere_become_the_top_level_system() -> None:
    body = to_messages_request(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "a"},
                {"role": "developer", "content": [{"type": "text", "text": "No jokes."}]},
                {"role": "user", "content": "b"},
            ],
        }
    )
    assert body["system"] == "Be brief.\n\nNo jokes."
    assert body["messages"] == [{"role": "user", "content": [*_text("a"), *_text("b")]}]


def test_max_tokens_is_the_requests_else_the_default() -> None:
    user = [{"role": "user", "content": "x"}]
    assert to_messages_request({"messages": user})["max_tokens"] == 4096
    assert to_messages_request({"messages": user, "max_completion_tokens": 7})["max_tokens"] == 7
    assert to_messages_request({"messages": user, "max_tokens": 9})["max_tokens"] == 9


def test_parameters_and_tool_choice() -> None:
    body = to_messages_request(
        {
            "messages": [{"role": "user", "content": "x"}],
            "stop": "END",
            "temperature": 0.2,
            "user": "u1",
            "stream_options": {"include_usage": True},
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "parallel_tool_calls": False,
        }
    )
    assert body["stop_sequences"] == ["END"] and body["temperature"] == 0.2
    assert body["metadata"] == {"user_id": "u1"} and "stream_options" not in body
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]
    assert body["tool_choice"] == {"type": "tool", "name": "f", "disable_parallel_tool_use": True}


def test_json_object_is_asked_for_in_the_system_prompt() -> None:
    body = to_messages_request(
        {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}
    )
    assert "JSON object" in body["system"] and "output_config" not in body


@pytest.mark.parametrize(
    "part",
    [{"type": "input_audio", "input_audio": {}}, {"type": "image_url", "image_url": {"url": "data:image/png,raw"}}],
)
def test_what_cannot_be_translated_is_an_invalid_request(part: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        to_messages_request({"messages": [{"role": "user", "content": [part]}]})


@pytest.mark.parametrize("extra", [{"n": 2}, {"logprobs": True}])
def test_what_anthropic_cannot_answer_is_refused_not_dropped(extra: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        to_messages_request({"messages": [{"role": "user", "content": "x"}], **extra})


def test_whole_reply_with_text_and_tool_use() -> None:
    reply = to_chat_completion(
        {
            "id": "msg_1",
            "model": "m",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 3, "cache_read_input_tokens": 2, "output_tokens": 4},
        }
    )
    message = reply["choices"][0]["message"]
    assert message["content"] == "Let me look." and reply["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"] == [
        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    ]
    assert reply["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def test_max_tokens_stop_is_length() -> None:
    reply = to_chat_completion({"content": [{"type": "text", "text": "cut"}], "stop_reason": "max_tokens"})
    assert reply["choices"][0]["finish_reason"] == "length"


def test_stream_events_become_chunks_with_tool_call_indexes() -> None:
    translator = StreamTranslator("claude")
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 5}}},
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "f"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a"'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ": 1}"}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 6}},
        {"type": "message_stop"},
    ]
    chunks = [chunk for event in events for chunk in translator.feed(event)]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""} and deltas[1] == {"content": "Hi"}
    assert deltas[2]["tool_calls"][0] == {
        "index": 0,
        "id": "t1",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    assert "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[2:5]) == '{"a": 1}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 6,
        "total_tokens": 11,
    }
    with pytest.raises(UpstreamError, match="Overloaded"):
        translator.feed({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


def test_error_bodies_in_openai_shape() -> None:
    body = orjson.loads(
        openai_error_body(b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}')
    )
    assert body == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded_error"}
    }
    assert orjson.loads(openai_error_body(b"<html>bad gateway"))["error"]["message"] == "<html>bad gateway"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


async def test_model_list_and_refused_calls(fake: FakeAnthropic) -> None:
    settings = UpstreamSettings(kind="anthropic", base_url=fake.base_url, api_key=KEY)  # type: ignore[arg-type]
    upstream = AnthropicUpstream("claude", settings, Metrics())
    await upstream.start()
    try:
        assert [m["id"] for m in await upstream.list_models("r1")] == ["claude-haiku-4-5", "claude-sonnet-4-5"]
        assert fake.last("/v1/models").query == "limit=1000"
        with pytest.raises(UpstreamStatus) as refused:
            await upstream.complete("/embeddings", b'{"input": "x"}', "r2")
        assert refused.value.status == 400 and b"Anthropic Messages API" in refused.value.body
        with pytest.raises(InvalidRequest, match="OpenAI-compatible default upstream"):
            await upstream.forward("POST", "/files", "", [], b"", "r3")
        assert upstream.scrub(f"key {KEY}") == "key [redacted]"
    finally:
        await upstream.close()
