"""Anthropic's streaming events and error bodies in OpenAI's shapes.

A Messages stream says in typed events what a chat completions stream says in deltas: text and
tool-input deltas belong to numbered content blocks, the stop reason and output tokens arrive in
``message_delta``, and input tokens in ``message_start``. ``StreamTranslator`` turns one stream's
events into chat completion chunks in order (tool calls numbered by their own ``index``), ending
with the usage chunk that ``stream_options.include_usage`` asks for. ``openai_error_body`` rewrites
an Anthropic error body so the client sees OpenAI's ``{"error": {...}}``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.errors import UpstreamError
from gateway.upstream.anthropic_wire import FINISH_REASONS, usage

__all__ = ["StreamTranslator", "openai_error_body"]

#: Anthropic error types to OpenAI's (the Anthropic type stays in ``code``).
_ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "not_found_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "billing_error": "permission_error",
    "rate_limit_error": "rate_limit_error",
}


class StreamTranslator:
    """One Messages stream's events in, chat completion chunks out (``feed`` per event)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._id = ""
        self._model = ""
        self._created = int(time.time())
        self._usage: dict[str, Any] = {}
        self._tool_index: dict[int, int] = {}

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks ``event`` stands for (often none). Raises ``UpstreamError`` for an error event."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._id, self._model = message.get("id", ""), message.get("model", "")
            self._usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(int(event.get("index", 0)), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(int(event.get("index", 0)), event.get("delta") or {})
        if kind == "message_delta":
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            reason = (event.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, FINISH_REASONS.get(reason, "stop"))] if reason else []
        if kind == "message_stop":
            return [self._usage_chunk()]
        if kind == "error":
            error = event.get("error") or {}
            raise UpstreamError(f"upstream {self._name!r} reported an error: {error.get('message', error)}")
        return []  # ping, content_block_stop, and event types added later

    def _block_start(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        if block.get("type") == "tool_use":
            position = self._tool_index[index] = len(self._tool_index)
            call = {
                "index": position,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        if delta.get("type") == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if delta.get("type") == "input_json_delta" and index in self._tool_index:
            call = {"index": self._tool_index[index], "function": {"arguments": delta.get("partial_json", "")}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # thinking and signature deltas have no chat completions counterpart

    def _base(self) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self._base(), "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    def _usage_chunk(self) -> dict[str, Any]:
        return {**self._base(), "choices": [], "usage": usage(self._usage)}


def openai_error_body(raw: bytes) -> bytes:
    """An Anthropic error body (``{"type": "error", "error": {"type", "message"}}``) in OpenAI's shape;
    a body of another shape is wrapped as it is."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        kind = str(error.get("type") or "api_error")
        message = str(error.get("message") or kind)
    else:
        kind, message = "api_error", raw.decode("utf-8", "replace")[:2000]
    return orjson.dumps(
        {"error": {"message": message, "type": _ERROR_TYPES.get(kind, "server_error"), "param": None, "code": kind}}
    )
