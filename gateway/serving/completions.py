"""A policy's prompt on ``POST /v1/completions``: laid out in the prompt text, or refused by name.

The layers that only shape the request (prompt, few-shot examples, retrieval) run on a one-message
chat body holding the client's prompt; what they put before it is then written out as plain text
ahead of the prompt, in this layout (parts separated by a blank line)::

    <system prompt, with any retrieved sources it carries>

    User: <example input>
    Assistant: <example output>

    <the client's prompt, unchanged>

A variant with a layer that reads or edits the chat reply (``output``, ``prompt.reasoning``) or
runs chat steps cannot answer a plain completion: the request is refused with a 400 that names
that layer and where the policy sets it (found when the policy loaded), never answered without it.
"""

from __future__ import annotations

from typing import Any

from gateway.engine.record import Exchange
from gateway.errors import InvalidRequest
from gateway.serving.answer import new_call
from gateway.serving.resolve import Route
from gateway.serving.runtime import Runtime
from gateway.wire import ChatMessage, ChatRequest, ModelRequest, get_param

__all__ = ["apply_policy_prompt", "prompt_text"]

_LABELS = {"user": "User", "assistant": "Assistant"}


def prompt_text(messages: list[ChatMessage]) -> str:
    """What the layers put before the client's prompt, as plain text in the documented layout."""
    blocks: list[str] = []
    for message in messages:
        text = _text(message.content)
        if message.role in _LABELS:
            line = f"{_LABELS[message.role]}: {text}"
            if message.role == "assistant" and blocks and blocks[-1].startswith("User: "):
                blocks[-1] += "\n" + line
                continue
            blocks.append(line)
        elif text:
            blocks.append(text)
    return "\n\n".join(blocks)


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content)
    return content or ""


async def _with_prefix(prompt: str, route: Route, body: ModelRequest, exchange: Exchange, runtime: Runtime) -> str:
    metadata = get_param(body, "metadata")
    chat = ChatRequest(
        model=body.model,
        messages=[ChatMessage(role="user", content=prompt)],
        user=get_param(body, "user"),
        metadata=metadata if isinstance(metadata, dict) else None,
    )
    call, report = new_call(route, chat, exchange, runtime)
    try:
        await route.pipeline.prepare(call)
    finally:
        report.finish()
    before = call.body.messages[:-1]
    prefix = prompt_text(before)
    return f"{prefix}\n\n{prompt}" if prefix else prompt


async def apply_policy_prompt(route: Route, body: ModelRequest, exchange: Exchange, runtime: Runtime) -> None:
    """Put the variant's prompt and examples into ``body``'s prompt text. Raises ``InvalidRequest``
    when the variant cannot answer a plain completion, or the prompt is token ids."""
    variant = route.variant
    if variant is None:
        return
    if variant.completions_blocker is not None:
        raise InvalidRequest(
            f"The model '{exchange.policy}' cannot answer /v1/completions: {variant.completions_blocker}. "
            "Use /v1/chat/completions or /v1/responses.",
            param="model",
            code="unsupported_model",
        )
    prompt = get_param(body, "prompt")
    if isinstance(prompt, str):
        body.prompt = await _with_prefix(prompt, route, body, exchange, runtime)  # type: ignore[attr-defined]
    elif isinstance(prompt, list) and all(isinstance(item, str) for item in prompt):
        body.prompt = [await _with_prefix(item, route, body, exchange, runtime) for item in prompt]  # type: ignore[attr-defined]
    elif variant.pipeline.layers:
        raise InvalidRequest(
            f"The model '{exchange.policy}' puts its prompt into the prompt text; send 'prompt' as text, "
            "not token ids.",
            param="prompt",
            code="invalid_type",
        )
