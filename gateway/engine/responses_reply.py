"""Whole replies between the two APIs: a native upstream's Responses object as the chat completion
the layers read, and a chat answer as the Responses object a client receives; usage both ways."""

from __future__ import annotations

import time
from typing import Any

from gateway.engine.responses import text_of
from gateway.wire import ChatCompletion, get_param
from gateway.wire_responses import ResponsesRequest

__all__ = ["chat_reply_of", "chat_usage", "output_items", "response_of", "usage_of"]


def chat_usage(usage: Any) -> dict[str, Any] | None:
    """Responses usage (``input_tokens``...) as chat usage (``prompt_tokens``...)."""
    if not isinstance(usage, dict):
        return None
    out: dict[str, Any] = {
        "prompt_tokens": usage.get("input_tokens", 0),
        "completion_tokens": usage.get("output_tokens", 0),
        "total_tokens": usage.get("total_tokens", 0),
    }
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens")
    if cached is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def usage_of(usage: Any) -> dict[str, Any] | None:
    """Chat usage as Responses usage."""
    if not isinstance(usage, dict):
        return None
    prompt_details = usage.get("prompt_tokens_details") or {}
    cached = prompt_details.get("cached_tokens") or 0
    written = prompt_details.get("cache_write_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": usage.get("prompt_tokens", 0),
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": usage.get("completion_tokens", 0),
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": usage.get("total_tokens", 0),
    }


def chat_reply_of(response: dict[str, Any]) -> ChatCompletion:
    """A native upstream's Responses object as the chat completion the layers read."""
    text, calls = [], []
    for item in response.get("output") or ():
        if item.get("type") == "message":
            text += [part.get("text", "") for part in item.get("content") or () if part.get("type") == "output_text"]
        elif item.get("type") == "function_call":
            calls.append(
                {
                    "id": item.get("call_id"),
                    "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    incomplete = response.get("status") == "incomplete"
    finish = "tool_calls" if calls else "length" if incomplete else "stop"
    reply: ChatCompletion = {
        "id": response.get("id"),
        "object": "chat.completion",
        "created": response.get("created_at") or int(time.time()),
        "model": response.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    usage = chat_usage(response.get("usage"))
    if usage is not None:
        reply["usage"] = usage
    return reply


def output_items(message: dict[str, Any], item_id: str) -> list[dict[str, Any]]:
    """A chat reply's message as Responses output items: one message item, one item per tool call."""
    items: list[dict[str, Any]] = []
    if message.get("content") or not message.get("tool_calls"):
        part = {"type": "output_text", "text": text_of(message.get("content")), "annotations": [], "logprobs": []}
        items.append(
            {"type": "message", "id": f"msg_{item_id}", "status": "completed", "role": "assistant", "content": [part]}
        )
    for number, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        items.append(
            {
                "type": "function_call",
                "id": f"fc_{item_id}_{number}",
                "call_id": call.get("id"),
                "name": function.get("name"),
                "arguments": function.get("arguments", ""),
                "status": "completed",
            }
        )
    return items


def response_of(
    request: ResponsesRequest,
    response_id: str,
    output: list[dict[str, Any]],
    usage: Any,
    finish: str | None,
    created: int | None = None,
) -> dict[str, Any]:
    """The Responses object a client receives, echoing what it asked for."""
    incomplete = finish == "length"
    return {
        "id": f"resp_{response_id}",
        "object": "response",
        "created_at": created or int(time.time()),
        "status": "incomplete" if incomplete else "completed",
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "metadata": request.metadata or {},
        "model": request.model,
        "output": output,
        "parallel_tool_calls": get_param(request, "parallel_tool_calls") is not False,
        "previous_response_id": None,
        "reasoning": request.reasoning,
        "store": False,
        "temperature": get_param(request, "temperature"),
        "text": request.text or {"format": {"type": "text"}},
        "tool_choice": request.tool_choice or "auto",
        "tools": request.tools or [],
        "top_p": get_param(request, "top_p"),
        "truncation": "disabled",
        "usage": usage_of(usage),
        "user": request.user,
    }
