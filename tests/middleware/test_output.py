"""The output layer: how the format is asked for, validation, re-asks, and what an invalid answer gets."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import OutputInvalid
from gateway.wire import ChatRequest
from tests.middleware.helpers import call_for, pipeline, prepared, report_of

SCHEMA = {
    "type": "object",
    "properties": {"label": {"enum": ["a", "b"]}},
    "required": ["label"],
    "additionalProperties": False,
}
USER = {"role": "user", "content": "x"}


def _reply(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


async def test_response_format_where_supported() -> None:
    body = await prepared({"output": {"json_schema": SCHEMA}}, [USER])
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA, "strict": True},
    }


async def test_instructions_where_not_supported() -> None:
    call = call_for([USER])
    await pipeline({"output": {"json_schema": SCHEMA}}, supports_json_schema=False).prepare(call)
    assert not hasattr(call.body, "response_format")
    system = call.body.messages[0]
    assert system.role == "system"
    assert isinstance(system.content, str) and '"enum":["a","b"]' in system.content


async def _run(policy: dict[str, Any], answers: list[str]) -> tuple[dict[str, Any], Any, list[ChatRequest]]:
    sent: list[ChatRequest] = []

    async def send(body: ChatRequest) -> dict[str, Any]:
        sent.append(body)
        return _reply(answers[len(sent) - 1])

    call = call_for([USER])
    reply = await pipeline(policy).complete(call, send)
    return reply, call, sent


async def test_valid_first_time() -> None:
    _, call, sent = await _run({"output": {"json_schema": SCHEMA}}, ['{"label": "a"}'])
    assert report_of(call).validations == ["valid"]
    assert call.response_headers["x-prefit-output-valid"] == "true"
    assert len(sent) == 1


async def test_reask_with_the_validation_error_then_repaired() -> None:
    reply, call, sent = await _run(
        {"output": {"json_schema": SCHEMA}}, ['{"label": "c"}', '```json\n{"label": "b"}\n```']
    )
    assert report_of(call).validations == ["repaired"]
    assert reply["choices"][0]["message"]["content"].endswith("```")
    reask = sent[1].messages
    assert reask[-2].role == "assistant" and reask[-2].content == '{"label": "c"}'
    assert reask[-1].role == "user" and "at label: 'c' is not one of ['a', 'b']" in str(reask[-1].content)


async def test_still_invalid_is_returned_marked() -> None:
    reply, call, sent = await _run({"output": {"json_schema": SCHEMA, "max_retries": 1}}, ["nope", "still no"])
    assert report_of(call).validations == ["invalid"]
    assert call.response_headers["x-prefit-output-valid"] == "false"
    assert reply["choices"][0]["message"]["content"] == "still no"
    assert len(sent) == 2


async def test_still_invalid_is_an_error_when_the_policy_says_so() -> None:
    with pytest.raises(OutputInvalid):
        await _run({"output": {"json_schema": SCHEMA, "max_retries": 0, "on_invalid": "error"}}, ["nope"])


async def test_reasoning_is_removed_before_validation_and_on_reask() -> None:
    policy = {"prompt": {"reasoning": {}}, "output": {"json_schema": SCHEMA}}
    answers = ['thinking...\nAnswer: {"label": "z"}', 'more thinking\nAnswer: {"label": "a"}']
    reply, call, sent = await _run(policy, answers)
    assert reply["choices"][0]["message"]["content"] == '{"label": "a"}'
    assert report_of(call).validations == ["repaired"]
    assert sent[1].messages[-2].content == '{"label": "z"}'
