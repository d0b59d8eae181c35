"""Chat completions to Anthropic's Messages API and back: the request body and the whole reply.

Pure functions over parsed JSON, so every rule is unit tested without a socket. The engine and every
layer keep speaking OpenAI's chat format; only ``gateway.upstream.anthropic`` calls these. What the
Messages API asks for and chat completions leave loose is settled here: system messages become the
top-level ``system``, consecutive turns of one role are merged so roles alternate, tool results
travel as ``tool_result`` blocks in a user turn, and ``max_tokens`` is always set.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.errors import InvalidRequest

__all__ = ["DEFAULT_MAX_TOKENS", "FINISH_REASONS", "to_chat_completion", "to_messages_request", "usage"]

#: Sent when neither the request nor the policy's params set ``max_tokens`` (the API requires it).
DEFAULT_MAX_TOKENS = 4096

#: Anthropic ``stop_reason`` to OpenAI ``finish_reason``.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_JSON_OBJECT_INSTRUCTION = "Reply with only a JSON object, with no other text."


def to_messages_request(chat: dict[str, Any]) -> dict[str, Any]:
    """The Messages API body for the chat completions body ``chat``. Raises ``InvalidRequest``."""
    if (chat.get("n") or 1) > 1:
        raise InvalidRequest("An Anthropic upstream answers one choice per request; n must be 1.", param="n")
    if chat.get("logprobs"):
        raise InvalidRequest("An Anthropic upstream does not return logprobs.", param="logprobs")
    system, turns = _split_system(chat.get("messages") or [])
    body: dict[str, Any] = {
        "model": chat.get("model"),
        "max_tokens": chat.get("max_tokens") or chat.get("max_completion_tokens") or DEFAULT_MAX_TOKENS,
        "messages": _alternating(turns),
    }
    response_format = chat.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    elif response_format.get("type") == "json_object":
        system.append(_JSON_OBJECT_INSTRUCTION)
    if system:
        body["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p", "stream"):
        if chat.get(name) is not None:
            body[name] = chat[name]
    stop = chat.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if chat.get("user"):
        body["metadata"] = {"user_id": chat["user"]}
    if chat.get("tools"):
        body["tools"] = [_tool(tool) for tool in chat["tools"]]
    choice = _tool_choice(chat.get("tool_choice"), chat.get("parallel_tool_calls"))
    if choice is not None and chat.get("tools"):
        body["tool_choice"] = choice
    return body


def _split_system(messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """System (and developer) messages, wherever they stand, apart from the conversation's turns."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") in ("system", "developer"):
            text = _text(message.get("content"))
            if text:
                system.append(text)
        else:
            turns.append(message)
    return system, turns


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _alternating(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic turns, consecutive turns of one role merged into one (tool results are user turns)."""
    out: list[dict[str, Any]] = []
    for turn in turns:
        role = "assistant" if turn.get("role") == "assistant" else "user"
        blocks = _blocks(turn)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _blocks(turn: dict[str, Any]) -> list[dict[str, Any]]:
    role = turn.get("role")
    if role == "tool":
        return [{"type": "tool_result", "tool_use_id": turn.get("tool_call_id"), "content": _text(turn.get("content"))}]
    blocks = _content_blocks(turn.get("content"))
    if role == "assistant":
        blocks.extend(_tool_use(call) for call in turn.get("tool_calls") or [])
    return blocks


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url") or {}))
        elif kind is not None and kind != "text":
            raise InvalidRequest(f"A content part of type {kind!r} cannot be sent to an Anthropic upstream.")
    return blocks


def _image(image_url: dict[str, Any] | str) -> dict[str, Any]:
    """An ``image_url`` part as an image block: a data URL inline (base64), an http(s) URL by reference."""
    url = image_url if isinstance(image_url, str) else str(image_url.get("url", ""))
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";")[0]
        if ";base64" not in header or not media_type:
            raise InvalidRequest("An image data URL must be base64 encoded and name its media type.")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest("An image must be a data URL or an http(s) URL.")


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        raise InvalidRequest(f"The arguments of tool call {call.get('id')!r} are not JSON.") from None
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": parsed}


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise InvalidRequest(f"A tool of type {tool.get('type')!r} cannot be sent to an Anthropic upstream.")
    function = tool.get("function") or {}
    out: dict[str, Any] = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice(choice: Any, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    if choice is None or choice == "auto":
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        raise InvalidRequest(f"tool_choice {choice!r} cannot be sent to an Anthropic upstream.")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def usage(anthropic_usage: dict[str, Any] | None) -> dict[str, int]:
    """OpenAI usage from Anthropic's: cached and cache-written input tokens are prompt tokens too."""
    given = anthropic_usage or {}
    prompt = sum(
        int(given.get(key) or 0) for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )
    completion = int(given.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def to_chat_completion(message: dict[str, Any]) -> dict[str, Any]:
    """The chat completion for a whole Messages API reply."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": message.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": FINISH_REASONS.get(message.get("stop_reason") or "", "stop"),
                "logprobs": None,
            }
        ],
        "usage": usage(message.get("usage")),
    }
