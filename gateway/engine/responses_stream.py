"""Streams between the two APIs: chat chunks as Responses events (toward a Responses client), and a
native upstream's Responses events as chat chunks (toward the policy's layers).

The events are those of ``openai.types.responses.ResponseStreamEvent``: ``response.created``,
``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta``, ``response.function_call_arguments.delta``, their ``.done``
counterparts, then ``response.completed`` carrying the whole response (with usage).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from gateway.engine.responses_reply import chat_usage, response_of
from gateway.errors import UpstreamPayload
from gateway.wire import ChatChunk
from gateway.wire_responses import ResponsesRequest
from middleware.base import close_stream

__all__ = ["chunks_of", "events_of"]


@dataclass(slots=True)
class _Item:
    """One output item being streamed: the message's text, or one tool call."""

    index: int
    item: dict[str, Any]
    text: list[str] = field(default_factory=list)


class _EventWriter:
    """Numbers events and keeps the output items open so far, in order."""

    def __init__(self, request: ResponsesRequest, response_id: str) -> None:
        self.request = request
        self.response_id = response_id
        self.sequence = 0
        self.items: list[_Item] = []
        self.message: _Item | None = None
        self.calls: dict[int, _Item] = {}

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def response(self, status: str, usage: Any = None, finish: str | None = None) -> dict[str, Any]:
        output = [self._final(item) for item in self.items] if status != "in_progress" else []
        response = response_of(self.request, self.response_id, output, usage, finish)
        if status == "in_progress":
            response.update(status="in_progress", usage=None)
        return response

    def open(self, item: dict[str, Any]) -> tuple[_Item, dict[str, Any]]:
        opened = _Item(len(self.items), item)
        self.items.append(opened)
        return opened, self.event("response.output_item.added", output_index=opened.index, item=item)

    def text_delta(self, text: str) -> list[dict[str, Any]]:
        events = []
        if self.message is None:
            item = {
                "type": "message",
                "id": f"msg_{self.response_id}",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            self.message, added = self.open(item)
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            events += [
                added,
                self.event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=self.message.index,
                    content_index=0,
                    part=part,
                ),
            ]
        self.message.text.append(text)
        events.append(
            self.event(
                "response.output_text.delta",
                item_id=self.message.item["id"],
                output_index=self.message.index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def call_delta(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        events = []
        number = delta.get("index", len(self.calls))
        function = delta.get("function") or {}
        call = self.calls.get(number)
        if call is None:
            item = {
                "type": "function_call",
                "id": f"fc_{self.response_id}_{number}",
                "call_id": delta.get("id"),
                "name": function.get("name"),
                "arguments": "",
                "status": "in_progress",
            }
            call, added = self.open(item)
            self.calls[number] = call
            events.append(added)
        if function.get("arguments"):
            call.text.append(function["arguments"])
            events.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=call.item["id"],
                    output_index=call.index,
                    delta=function["arguments"],
                )
            )
        return events

    def _final(self, opened: _Item) -> dict[str, Any]:
        text = "".join(opened.text)
        if opened.item["type"] == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            return {**opened.item, "status": "completed", "content": [part]}
        return {**opened.item, "status": "completed", "arguments": text}

    def close_items(self) -> list[dict[str, Any]]:
        events = []
        for opened in self.items:
            final = self._final(opened)
            common = {"item_id": final["id"], "output_index": opened.index}
            if final["type"] == "message":
                part = final["content"][0]
                events += [
                    self.event("response.output_text.done", **common, content_index=0, text=part["text"], logprobs=[]),
                    self.event("response.content_part.done", **common, content_index=0, part=part),
                ]
            else:
                events.append(
                    self.event(
                        "response.function_call_arguments.done",
                        **common,
                        name=final["name"],
                        arguments=final["arguments"],
                    )
                )
            events.append(self.event("response.output_item.done", output_index=opened.index, item=final))
        return events


async def events_of(
    chunks: AsyncIterator[ChatChunk], request: ResponsesRequest, response_id: str
) -> AsyncIterator[dict[str, Any]]:
    """Chat chunks (of choice 0) as the Responses event stream a client of ``/v1/responses`` expects."""
    writer = _EventWriter(request, response_id)
    usage: Any = None
    finish: str | None = None
    try:
        yield writer.event("response.created", response=writer.response("in_progress"))
        yield writer.event("response.in_progress", response=writer.response("in_progress"))
        async for chunk in chunks:
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or ():
                if choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    for event in writer.text_delta(delta["content"]):
                        yield event
                for call in delta.get("tool_calls") or ():
                    for event in writer.call_delta(call):
                        yield event
                finish = choice.get("finish_reason") or finish
        for event in writer.close_items():
            yield event
        final = writer.response("completed", usage, finish)
        yield writer.event(
            "response.incomplete" if final["status"] == "incomplete" else "response.completed", response=final
        )
    finally:
        await close_stream(chunks)


def _chunk(event: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> ChatChunk:
    response = event.get("response") or {}
    return {
        "id": response.get("id", "resp"),
        "object": "chat.completion.chunk",
        "created": response.get("created_at", 0),
        "model": response.get("model", ""),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


async def chunks_of(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[ChatChunk]:
    """A native upstream's Responses events as chat chunks; the last one carries the usage."""
    calls: dict[int, int] = {}
    try:
        async for event in events:
            kind = event.get("type")
            if kind == "response.created":
                yield _chunk(event, {"role": "assistant", "content": ""})
            elif kind == "response.output_text.delta":
                yield _chunk(event, {"content": event.get("delta", "")})
            elif kind == "response.output_item.added" and (event.get("item") or {}).get("type") == "function_call":
                item = event["item"]
                number = calls[event.get("output_index", 0)] = len(calls)
                function = {"name": item.get("name"), "arguments": item.get("arguments") or ""}
                yield _chunk(
                    event,
                    {
                        "tool_calls": [
                            {"index": number, "id": item.get("call_id"), "type": "function", "function": function}
                        ]
                    },
                )
            elif kind == "response.function_call_arguments.delta":
                number = calls.get(event.get("output_index", 0), 0)
                yield _chunk(event, {"tool_calls": [{"index": number, "function": {"arguments": event.get("delta")}}]})
            elif kind in ("response.completed", "response.incomplete"):
                finish = "tool_calls" if calls else "length" if kind == "response.incomplete" else "stop"
                yield _chunk(event, {}, finish)
                usage = chat_usage((event.get("response") or {}).get("usage"))
                if usage is not None:
                    yield {**_chunk(event, {}), "choices": [], "usage": usage}
            elif kind in ("response.failed", "error"):
                error = (event.get("response") or {}).get("error") or event
                raise UpstreamPayload(f"the upstream's answer failed: {error.get('message', 'no message')}")
    finally:
        await close_stream(events)
