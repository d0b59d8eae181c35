"""Chain-of-thought answer extraction, forced parameters and the token cap."""

from __future__ import annotations

import re
from typing import Any

from gateway.engine.pipeline import replay_as_chunks
from gateway.policy import ReasoningSpec
from gateway.wire import ChatRequest
from middleware.reasoning import ReasoningLayer, extract_answer
from tests.middleware.helpers import call_for, pipeline, prepared

USER = {"role": "user", "content": "6*7?"}


def test_extract_answer_takes_the_last_match() -> None:
    pattern = re.compile(ReasoningSpec().answer_pattern)
    assert extract_answer(pattern, "Answer: maybe\nchecking... Answer: 42\n") == "42"
    assert extract_answer(pattern, "no answer here") is None
    assert extract_answer(pattern, 'Answer:\n{"a": 1,\n "b": 2}\n') == '{"a": 1,\n "b": 2}'


async def test_reasoning_instruction_and_extraction() -> None:
    async def send(body: ChatRequest) -> dict[str, Any]:
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "6*7 is 42.\nAnswer: 42"}}]}

    call = call_for([USER])
    reply = await pipeline({"prompt": {"system": "Be exact.", "reasoning": {}}}).complete(call, send)
    assert call.body.messages[0].content.startswith("Be exact.\n\nThink through")  # type: ignore[union-attr]
    assert reply["choices"][0]["message"]["content"] == "42"
    assert call.notes[ReasoningLayer] == ["6*7 is 42.\nAnswer: 42"]


async def test_force_wins_and_defaults_lose() -> None:
    body = await prepared({"params": {"top_p": 0.1}, "force": {"temperature": 0}}, [USER], temperature=1.2, top_p=0.9)
    assert (body["temperature"], body["top_p"]) == (0, 0.9)


async def test_max_tokens_cap() -> None:
    assert (await prepared({"max_tokens_cap": 100}, [USER], max_tokens=500))["max_tokens"] == 100
    assert (await prepared({"max_tokens_cap": 100}, [USER], max_completion_tokens=50))["max_completion_tokens"] == 50
    assert (await prepared({"max_tokens_cap": 100}, [USER]))["max_tokens"] == 100


async def test_whole_reply_replayed_as_chunks() -> None:
    reply = {
        "id": "c1",
        "created": 1,
        "model": "m",
        "usage": {"prompt_tokens": 1, "completion_tokens": 2},
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    }
    chunks = [chunk async for chunk in replay_as_chunks(reply, include_usage=True)]
    assert [c["choices"] for c in chunks] == [
        [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "logprobs": None, "finish_reason": None}],
        [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
        [],
    ]
    assert chunks[-1]["usage"] == reply["usage"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


async def test_replayed_tool_calls_carry_every_field_of_a_real_stream() -> None:
    calls = [
        {"id": f"call_{n}", "type": "function", "function": {"name": f"f{n}", "arguments": f'{{"n": {n}}}'}}
        for n in (0, 1)
    ]
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    reply = {"id": "c1", "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}
    deltas = [c["choices"][0]["delta"] async for c in replay_as_chunks(reply, include_usage=False)]
    assert deltas == [
        {"role": "assistant"},
        {
            "tool_calls": [
                {"index": 0, "id": "call_0", "type": "function", "function": {"name": "f0", "arguments": '{"n": 0}'}}
            ]
        },
        {
            "tool_calls": [
                {"index": 1, "id": "call_1", "type": "function", "function": {"name": "f1", "arguments": '{"n": 1}'}}
            ]
        },
        {},
    ]
