"""The fake upstream's ``/v1/responses``: whole answers and event streams in the Responses wire format.

- any model: a message echoing the last user input (``responded: ...``), with usage
- ``fake-500`` / ``fake-400`` / ``fake-429``: that status with an OpenAI error body
- ``fake-tool``: a ``function_call`` of the first tool the request offers, with ``{"city": "Paris"}``;
  once the input holds a ``function_call_output``, a message ``tool said: <output>``
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson


def _last_user_text(items: Any) -> str:
    if isinstance(items, str):
        return items
    for item in reversed(items or []):
        if item.get("type", "message") == "message" and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return "".join(part.get("text", "") for part in content if part.get("type") == "input_text")
    return ""


def _tool_output(items: Any) -> str | None:
    if isinstance(items, list) and items and items[-1].get("type") == "function_call_output":
        return str(items[-1].get("output"))
    return None


def output_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """What the fake model answers to a Responses body."""
    items = body.get("input")
    done = _tool_output(items)
    if body.get("model") == "fake-tool" and done is None and body.get("tools"):
        name = body["tools"][0]["name"]
        return [
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": name,
                "arguments": '{"city": "Paris"}',
                "status": "completed",
            }
        ]
    text = f"tool said: {done}" if done is not None else f"responded: {_last_user_text(items)}"
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant", "content": [part]}]


def response_of(body: dict[str, Any]) -> dict[str, Any]:
    output = output_of(body)
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1700000000,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": body.get("model"),
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "usage": {
            "input_tokens": 7,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 12,
        },
    }


def _event(number: int, kind: str, **fields: Any) -> bytes:
    data = orjson.dumps({"type": kind, "sequence_number": number, **fields})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


async def stream_of(body: dict[str, Any]) -> AsyncIterator[bytes]:
    """The event stream OpenAI sends for the same answer (text in two deltas)."""
    reply = response_of(body)
    started = {**reply, "status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str, dict[str, Any]]] = [("response.created", {"response": started})]
    events.append(("response.in_progress", {"response": started}))
    for index, item in enumerate(reply["output"]):
        opened = {**item, "status": "in_progress"}
        if item["type"] == "message":
            text = item["content"][0]["text"]
            opened["content"] = []
            empty = {"type": "output_text", "text": "", "annotations": []}
            at = {"item_id": item["id"], "output_index": index, "content_index": 0}
            half = len(text) // 2
            events += [
                ("response.output_item.added", {"output_index": index, "item": opened}),
                ("response.content_part.added", {**at, "part": empty}),
                ("response.output_text.delta", {**at, "delta": text[:half], "logprobs": []}),
                ("response.output_text.delta", {**at, "delta": text[half:], "logprobs": []}),
                ("response.output_text.done", {**at, "text": text, "logprobs": []}),
                ("response.content_part.done", {**at, "part": item["content"][0]}),
            ]
        else:
            opened["arguments"] = ""
            at = {"item_id": item["id"], "output_index": index}
            events += [
                ("response.output_item.added", {"output_index": index, "item": opened}),
                ("response.function_call_arguments.delta", {**at, "delta": item["arguments"]}),
                ("response.function_call_arguments.done", {**at, "arguments": item["arguments"]}),
            ]
        events.append(("response.output_item.done", {"output_index": index, "item": item}))
    events.append(("response.completed", {"response": reply}))
    for number, (kind, fields) in enumerate(events):
        yield _event(number, kind, **fields)
