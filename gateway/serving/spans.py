"""The attributes of chain-step and upstream-call spans, and the wrapped upstream calls.

Only called when tracing is on (``runtime.tracing`` set); kept apart from ``tracing.py`` so the
request path never imports the OpenTelemetry SDK when tracing is off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from gateway.config.load import LoadedVariant
from gateway.engine.pipeline import OpenStream, SendWhole
from gateway.wire import ChatChunk, ChatCompletion, ChatRequest

if TYPE_CHECKING:
    from gateway.serving.resolve import Route
    from gateway.serving.tracing import Tracing

__all__ = ["step_attributes", "traced_upstream"]


def step_attributes(chain: str, step: str, policy: str, variant: LoadedVariant) -> dict[str, Any]:
    return {
        "prefit.chain": chain,
        "prefit.step": step,
        "prefit.policy": policy,
        "prefit.variant": variant.name,
        "prefit.prompt_version": variant.prompt_version,
    }


def _call_attributes(route: Route, provider: str) -> dict[str, Any]:
    variant = route.variant
    model = variant.upstream_model if variant is not None else "passthrough"
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "gen_ai.request.model": model,
        "prefit.upstream": route.upstream.name,
    }
    if route.policy is not None and variant is not None:
        attributes["prefit.policy"] = route.policy.name
        attributes["prefit.variant"] = variant.name
        attributes["prefit.prompt_version"] = variant.prompt_version
    return attributes


def traced_upstream(
    tracing: Tracing, route: Route, provider: str, send: SendWhole, open_stream: OpenStream
) -> tuple[SendWhole, OpenStream]:
    """``send`` and ``open_stream`` each inside an upstream-call span (usage noted from the answer)."""
    attributes = _call_attributes(route, provider)
    name = f"chat {attributes['gen_ai.request.model']}"

    async def traced_send(body: ChatRequest) -> ChatCompletion:
        reply: ChatCompletion = await tracing.around(name, attributes, lambda: send(body), client=True)
        return reply

    async def traced_open(body: ChatRequest) -> AsyncIterator[ChatChunk]:
        chunks: AsyncIterator[ChatChunk] = await tracing.around(
            name, attributes, lambda: open_stream(body), client=True
        )
        return chunks

    return traced_send, traced_open
