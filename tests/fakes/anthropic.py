"""A small fake Anthropic Messages API on a real socket that records what it received.

It checks requests as the real API does where a translation could go wrong, and answers a 400
``invalid_request_error`` otherwise: the key (as ``x-api-key`` or, as recent SDKs send it, a bearer
token), the ``anthropic-version`` header, a required ``max_tokens``, no unknown top-level fields,
roles that alternate starting with ``user`` (so no ``system`` role in ``messages``), and tool results
that answer a tool use. ``tests/upstream/test_anthropic_fake.py`` drives it with the official
``anthropic`` SDK, so its wire format cannot drift from the real API's.

Answers, by what the request holds:

- ``replies`` (a queue a test fills): the next text answer, whatever the request
- ``failures`` (a queue of ``(status, error_type, headers)``): the next request fails so
- model ``claude-overloaded``: always 529 ``overloaded_error``
- a last user turn with a tool result: ``tool said: <result>``
- tools offered (``tool_choice`` not ``none``): a ``tool_use`` of the first tool with ``{"city": "Paris"}``
- an image in the last user turn: ``an image by <source type>``
- anything else: ``echo: <last user text>``
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.upstream import FakeUpstream

KEY = "sk-ant-fake-0123456789abcdef"
MODELS = ["claude-haiku-4-5", "claude-sonnet-4-5"]
_FIELDS = {
    "model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k", "stop_sequences", "stream",
    "metadata", "tools", "tool_choice", "output_config", "thinking", "service_tier",
}  # fmt: skip

Failure = tuple[int, str, dict[str, str]]


@dataclass
class FakeAnthropic(FakeUpstream):
    """Run with ``start()``; inspect ``requests`` (``last("/v1/messages").body``); ``reset()`` between tests."""

    replies: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        super().reset()
        self.replies.clear()
        self.failures.clear()

    def messages_sent(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path == "/v1/messages"]

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/messages", self.messages, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
            ]
        )

    async def models(self, request: Request) -> Response:
        await self._record(request)
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-10-01T00:00:00Z"} for m in MODELS]
        return _json({"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]})

    async def messages(self, request: Request) -> Response:
        body = await self._record(request)
        if KEY not in (request.headers.get("x-api-key"), request.headers.get("authorization", "")[7:]):
            return _error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        problem = _problem(body)
        if problem:
            return _error(400, "invalid_request_error", problem)
        if self.failures:
            status, kind, headers = self.failures.pop(0)
            return _error(status, kind, f"scripted {status}", headers)
        if body["model"] == "claude-overloaded":
            return _error(529, "overloaded_error", "Overloaded")
        blocks, stop = self._answer(body)
        if body.get("stream"):
            return StreamingResponse(_stream(body["model"], blocks, stop), media_type="text/event-stream")
        return _json(_message(body["model"], blocks, stop, _tokens(body)))

    def _answer(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        if self.replies:
            return [{"type": "text", "text": self.replies.pop(0)}], "end_turn"
        last = body["messages"][-1]["content"]
        last = [{"type": "text", "text": last}] if isinstance(last, str) else last
        results = [b for b in last if b["type"] == "tool_result"]
        if results:
            return [{"type": "text", "text": f"tool said: {_text(results[0]['content'])}"}], "end_turn"
        if body.get("tools") and (body.get("tool_choice") or {}).get("type") != "none":
            tool = body["tools"][0]["name"]
            return [{"type": "tool_use", "id": "toolu_01", "name": tool, "input": {"city": "Paris"}}], "tool_use"
        images = [b for b in last if b["type"] == "image"]
        if images:
            return [{"type": "text", "text": f"an image by {images[0]['source']['type']}"}], "end_turn"
        return [{"type": "text", "text": f"echo: {_text(last)}"}], "end_turn"


def _problem(body: Any) -> str | None:
    """What the real API would reject in ``body``, or None."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    extra = sorted(set(body) - _FIELDS)
    if extra:
        return f"{extra[0]}: Extra inputs are not permitted"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages") or []
    if not messages:
        return "messages: Field required"
    tool_uses: set[str] = set()
    for position, message in enumerate(messages):
        expected = "user" if position % 2 == 0 else "assistant"
        if message.get("role") != expected:
            return f"messages.{position}.role: roles must alternate between user and assistant, starting with user"
        content = message.get("content")
        for block in [] if isinstance(content, str) else content:
            if block["type"] == "tool_use":
                tool_uses.add(block["id"])
            if block["type"] == "tool_result" and block["tool_use_id"] not in tool_uses:
                return f"messages.{position}: tool_result {block['tool_use_id']} has no matching tool_use"
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(block.get("text", "") for block in content if block.get("type") == "text")


def _tokens(body: dict[str, Any]) -> int:
    return max(1, len(orjson.dumps(body["messages"]).split()))


def _message(model: str, blocks: list[dict[str, Any]], stop: str, input_tokens: int) -> dict[str, Any]:
    return {
        "id": "msg_fake01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 7},
    }


async def _stream(model: str, blocks: list[dict[str, Any]], stop: str):  # type: ignore[no-untyped-def]
    start = _message(model, [], stop, 11)
    start["stop_reason"] = None
    start["usage"]["output_tokens"] = 1
    yield _sse("message_start", {"type": "message_start", "message": start})
    yield _sse("ping", {"type": "ping"})
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            words = block["text"].split(" ")
            deltas = [{"type": "text_delta", "text": w if i == 0 else f" {w}"} for i, w in enumerate(words)]
        else:
            opening = {**block, "input": {}}
            raw = orjson.dumps(block["input"]).decode()
            half = len(raw) // 2
            deltas = [{"type": "input_json_delta", "partial_json": part} for part in (raw[:half], raw[half:])]
        yield _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": opening})
        for delta in deltas:
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": 7},
    }
    yield _sse("message_delta", delta)
    yield _sse("message_stop", {"type": "message_stop"})


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}
    return _json(body, status, {"request-id": "req_fake", **(headers or {})})
