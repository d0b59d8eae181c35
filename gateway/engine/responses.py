"""The Responses API in terms of chat completions, both ways, for request bodies and whole replies.

Policies' layers edit a chat body (``gateway.wire.ChatRequest``), so a Responses request is turned
into one at the edge and its answer turned back. Toward an upstream the chat body is sent as it
is (``responses_api: translate``) or turned back into a Responses body (``native``); see
``gateway.engine.responses_upstream``. Streams are translated in ``gateway.engine.responses_stream``.

Mapping: ``instructions`` is a system message, input messages are chat messages (``input_text``
and ``input_image`` parts as chat parts), ``function_call`` items are an assistant message's
``tool_calls``, ``function_call_output`` items are ``tool`` messages, function tools and
``tool_choice`` map one to one, ``text.format`` is ``response_format``, ``max_output_tokens`` is
``max_tokens``, ``text.verbosity`` is ``verbosity`` and ``reasoning.effort`` is
``reasoning_effort`` (other ``reasoning`` options, such as ``summary``, have no chat equivalent
and are not sent). Reasoning items in the input carry no text a chat model could use and are left
out. Any other field stays on the chat body (a native upstream receives it; ``translate`` drops
the names in ``RESPONSES_ONLY``).
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest
from gateway.wire import ChatRequest
from gateway.wire_responses import ResponsesRequest

__all__ = ["RESPONSES_ONLY", "chat_of", "responses_body_of", "text_of"]

#: Responses fields a chat completions upstream does not know; ``translate`` drops them.
RESPONSES_ONLY = frozenset(
    {
        "include",
        "truncation",
        "store",
        "background",
        "prompt",
        "prompt_cache_key",
        "safety_identifier",
        "max_tool_calls",
        "previous_response_id",
        "conversation",
        "prompt_cache_retention",
        "context_management",
    }
)

_MAPPED = {"model", "input", "instructions", "tools", "tool_choice", "text", "reasoning", "max_output_tokens"}


def _part_to_chat(part: dict[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "input_image" and part.get("image_url"):
        return {"type": "image_url", "image_url": {"url": part["image_url"], "detail": part.get("detail", "auto")}}
    raise InvalidRequest(f"Input content of type '{kind}' cannot be sent through a policy.", param="input")


def _message_to_chat(item: dict[str, Any]) -> dict[str, Any]:
    content = item.get("content")
    if isinstance(content, list):
        parts = [_part_to_chat(part) for part in content]
        if item.get("role") == "assistant" or all(part["type"] == "text" for part in parts):
            content = "".join(part["text"] for part in parts) if item.get("role") == "assistant" else parts
        else:
            content = parts
    return {"role": item.get("role", "user"), "content": content}


def _input_to_messages(items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message_to_chat(item))
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item.get("arguments", "")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output", "")
            text = output if isinstance(output, str) else "".join(p.get("text", "") for p in output)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        elif kind != "reasoning":
            raise InvalidRequest(f"Input items of type '{kind}' cannot be sent through a policy.", param="input")
    return messages


def _tool_to_chat(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise InvalidRequest(
            f"Tools of type '{tool.get('type')}' run on OpenAI's servers and cannot be sent through a policy; "
            "use function tools.",
            param="tools",
        )
    function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if tool.get(key) is not None}
    return {"type": "function", "function": function}


def _format_to_chat(fmt: dict[str, Any]) -> dict[str, Any] | None:
    kind = fmt.get("type")
    if kind == "json_schema":
        schema = {key: fmt[key] for key in ("name", "schema", "strict", "description") if key in fmt}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": "json_object"} if kind == "json_object" else None


def chat_of(request: ResponsesRequest) -> ChatRequest:
    """The chat body the policy's layers edit, from a Responses request."""
    messages = _input_to_messages(request.input)
    if request.instructions:
        messages.insert(0, {"role": "system", "content": request.instructions})
    fields: dict[str, Any] = {
        key: value for key, value in request.model_dump(exclude_unset=True).items() if key not in _MAPPED
    }
    fields.update(model=request.model, messages=messages)
    if request.tools:
        fields["tools"] = [_tool_to_chat(tool) for tool in request.tools]
    if isinstance(request.tool_choice, dict):
        fields["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice.get("name")}}
    elif request.tool_choice is not None:
        fields["tool_choice"] = request.tool_choice
    response_format = _format_to_chat((request.text or {}).get("format") or {})
    if response_format is not None:
        fields["response_format"] = response_format
    if (request.text or {}).get("verbosity"):
        fields["verbosity"] = request.text["verbosity"]  # type: ignore[index]
    if request.max_output_tokens is not None:
        fields["max_tokens"] = request.max_output_tokens
    if (request.reasoning or {}).get("effort"):
        fields["reasoning_effort"] = request.reasoning["effort"]  # type: ignore[index]
    if request.stream:
        fields["stream_options"] = {"include_usage": True}
    return ChatRequest.model_validate(fields)


def _content_to_input(role: str, content: Any) -> Any:
    if not isinstance(content, list):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") == "image_url":
            url = part["image_url"]
            url = url.get("url") if isinstance(url, dict) else url
            parts.append({"type": "input_image", "image_url": url})
        else:
            parts.append({"type": "output_text" if role == "assistant" else "input_text", "text": part.get("text", "")})
    return parts


def _messages_to_input(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role", "user")
        if role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id"),
                    "output": text_of(message.get("content")),
                }
            )
            continue
        if message.get("content") or not message.get("tool_calls"):
            items.append({"role": role, "content": _content_to_input(role, message.get("content"))})
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments", ""),
                }
            )
    return items


def responses_body_of(chat: dict[str, Any]) -> dict[str, Any]:
    """A Responses body for a native upstream, from the final chat body (a JSON object)."""
    body = {
        key: value
        for key, value in chat.items()
        if key
        not in (
            "messages",
            "tools",
            "tool_choice",
            "response_format",
            "max_tokens",
            "max_completion_tokens",
            "reasoning_effort",
            "stream_options",
        )
    }
    body["input"] = _messages_to_input(chat.get("messages") or [])
    if chat.get("tools"):
        body["tools"] = [{"type": "function", **tool.get("function", {})} for tool in chat["tools"]]
    choice = chat.get("tool_choice")
    if isinstance(choice, dict):
        body["tool_choice"] = {"type": "function", "name": (choice.get("function") or {}).get("name")}
    elif choice is not None:
        body["tool_choice"] = choice
    fmt = chat.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        body["text"] = {"format": {"type": "json_schema", **(fmt.get("json_schema") or {})}}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        body["text"] = {"format": {"type": "json_object"}}
    if "verbosity" in body:
        body["text"] = {**body.get("text", {}), "verbosity": body.pop("verbosity")}
    limit = chat.get("max_completion_tokens", chat.get("max_tokens"))
    if limit is not None:
        body["max_output_tokens"] = limit
    if chat.get("reasoning_effort"):
        body["reasoning"] = {"effort": chat["reasoning_effort"]}
    return body


def text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""
