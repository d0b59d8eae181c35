"""The Responses API in chat terms and back: request bodies, whole replies and event streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.engine.responses import chat_of, responses_body_of
from gateway.engine.responses_reply import chat_reply_of, output_items, response_of
from gateway.engine.responses_stream import chunks_of, events_of
from gateway.errors import InvalidRequest, UpstreamPayload
from gateway.wire import dump_body, loads
from gateway.wire_responses import ResponsesRequest

EVENT = TypeAdapter(ResponseStreamEvent)

CONVERSATION: list[dict[str, Any]] = [
    {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "https://x/cat.png"},
        ],
    },
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A cat."}]},
    {"type": "reasoning", "id": "rs_1", "summary": []},
    {"type": "function_call", "call_id": "c1", "name": "look", "arguments": "{}"},
    {"type": "function_call", "call_id": "c2", "name": "zoom", "arguments": '{"x": 2}'},
    {"type": "function_call_output", "call_id": "c1", "output": "tabby"},
    {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "big"}]},
]


def _request(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", "input": CONVERSATION, **fields})


def test_a_conversation_becomes_chat_messages() -> None:
    chat = chat_of(_request(instructions="Be kind."))
    messages = [m.model_dump(exclude_none=True) for m in chat.messages]
    assert messages == [
        {"role": "system", "content": "Be kind."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "auto"}},
            ],
        },
        {"role": "assistant", "content": "A cat."},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "zoom", "arguments": '{"x": 2}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "tabby"},
        {"role": "tool", "tool_call_id": "c2", "content": "big"},
    ]


def test_request_options_map_to_chat_and_back() -> None:
    tool = {"type": "function", "name": "look", "parameters": {"type": "object"}, "strict": True}
    fmt = {"type": "json_schema", "name": "t", "schema": {"type": "object"}, "strict": True}
    request = _request(
        tools=[tool],
        tool_choice={"type": "function", "name": "look"},
        text={"format": fmt, "verbosity": "low"},
        max_output_tokens=9,
        reasoning={"effort": "low"},
        temperature=0.3,
        include=["x"],
        stream=True,
    )
    chat = loads(dump_body(chat_of(request)))
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "look", "parameters": {"type": "object"}, "strict": True}}
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "look"}}
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "t", "schema": {"type": "object"}, "strict": True},
    }
    assert (chat["max_tokens"], chat["reasoning_effort"], chat["temperature"]) == (9, "low", 0.3)
    assert chat["stream_options"] == {"include_usage": True}
    back = responses_body_of(chat)
    assert back["tools"] == [tool]
    assert back["tool_choice"] == {"type": "function", "name": "look"}
    assert back["text"] == {"format": fmt, "verbosity": "low"}
    assert (back["max_output_tokens"], back["reasoning"], back["include"]) == (9, {"effort": "low"}, ["x"])
    assert "stream_options" not in back and "messages" not in back
    kinds = [item.get("type", "message") for item in back["input"]]
    assert kinds == [
        "message",
        "message",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
    ]
    assert back["input"][0]["content"][1] == {"type": "input_image", "image_url": "https://x/cat.png"}


@pytest.mark.parametrize(
    "bad", [{"tools": [{"type": "web_search"}]}, {"input": [{"type": "item_reference", "id": "x"}]}]
)
def test_what_a_policy_cannot_send_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        chat_of(ResponsesRequest.model_validate({"model": "m", "input": "hi", **bad}))


def test_replies_both_ways_parse_as_the_sdk_types() -> None:
    native = {
        "id": "resp_9",
        "created_at": 5,
        "model": "m",
        "status": "incomplete",
        "output": [
            {"type": "reasoning", "id": "rs", "summary": []},
            {
                "type": "message",
                "content": [{"type": "output_text", "text": "Hel"}, {"type": "output_text", "text": "lo"}],
            },
        ],
        "usage": {
            "input_tokens": 3,
            "output_tokens": 2,
            "total_tokens": 5,
            "input_tokens_details": {"cached_tokens": 1},
        },
    }
    chat = chat_reply_of(native)
    assert chat["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "Hello"},
        "finish_reason": "length",
    }
    assert chat["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 1},
    }
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    response = Response.model_validate(
        response_of(_request(), "abc", output_items(message, "abc"), chat["usage"], "tool_calls")
    )
    assert response.status == "completed" and response.usage is not None and response.usage.input_tokens == 3
    assert [(item.type, getattr(item, "call_id", None)) for item in response.output] == [("function_call", "c1")]


async def _iterate(items: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        yield item


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def test_chat_chunks_become_valid_responses_events() -> None:
    chunks = [
        _chunk({"role": "assistant", "content": "Hi "}),
        _chunk({"content": "there"}),
        _chunk(
            {"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]}
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1}'}}]}),
        _chunk({}, "tool_calls"),
        {"id": "c", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}},
    ]
    events = [event async for event in events_of(_iterate(chunks), _request(), "r1")]
    parsed = [EVENT.validate_python(event) for event in events]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    final = parsed[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == "Hi there"
    calls = [item for item in final.response.output if item.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [("c1", "f", '{"a": 1}')]
    assert final.response.usage is not None and final.response.usage.total_tokens == 7


async def test_native_events_become_chat_chunks() -> None:
    item = {"type": "function_call", "id": "fc", "call_id": "c1", "name": "f", "arguments": ""}
    events = [
        {"type": "response.created", "response": {"id": "r", "model": "m"}},
        {"type": "response.output_text.delta", "delta": "Hi", "output_index": 0},
        {"type": "response.output_item.added", "output_index": 1, "item": item},
        {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "{}"},
        {
            "type": "response.completed",
            "response": {"usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}},
        },
    ]
    chunks = [chunk async for chunk in chunks_of(_iterate(events))]
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    assert deltas[1] == {"content": "Hi"}
    assert deltas[2]["tool_calls"][0] == {
        "index": 0,
        "id": "c1",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    assert deltas[3] == {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


async def test_a_failed_native_stream_raises() -> None:
    events = [{"type": "response.failed", "response": {"error": {"message": "overloaded"}}}]
    with pytest.raises(UpstreamPayload, match="overloaded"):
        _ = [chunk async for chunk in chunks_of(_iterate(events))]
