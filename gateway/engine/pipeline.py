"""Run a policy's layers around one upstream call, whole or streamed.

The pipeline does not know how the upstream is reached: serving hands it two callables, one that
returns a whole completion and one that opens a chunk stream (a ``Dispatch``'s ``send`` and
``open_stream``). That keeps layers testable with no network and keeps providers behind the
upstream seam (``gateway.upstream.base``).

When any layer needs the whole answer (output validation, reasoning extraction) a streaming
request is answered from one whole upstream reply, run through the ``complete`` hooks and replayed
as chunks. The client then gets its first token only when the whole answer is ready and checked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from gateway.wire import ChatChunk, ChatCompletion, ChatRequest
from middleware.base import Call, Layer, PassThrough, close_stream
from middleware.few_shot import FewShotLayer
from middleware.output import OutputLayer
from middleware.params import ParamsLayer
from middleware.prompt import PromptLayer
from middleware.reasoning import ReasoningLayer
from middleware.retrieval import RetrievalLayer

__all__ = [
    "LAYER_TYPES",
    "OpenStream",
    "Pipeline",
    "SendWhole",
    "ask_for_usage",
    "replay_as_chunks",
    "strip_usage",
    "without_streaming",
]

SendWhole = Callable[[ChatRequest], Awaitable[ChatCompletion]]
OpenStream = Callable[[ChatRequest], Awaitable[AsyncIterator[ChatChunk]]]

#: Every layer type in the order its ``prepare`` runs; replies meet them in reverse. A new
#: capability adds its layer here. Retrieval follows the examples so its sources sit right before
#: the question; reasoning sits after output so its answer extraction runs before validation.
LAYER_TYPES: tuple[type[PassThrough], ...] = (
    ParamsLayer,
    PromptLayer,
    FewShotLayer,
    RetrievalLayer,
    OutputLayer,
    ReasoningLayer,
)


def without_streaming(body: ChatRequest) -> ChatRequest:
    """A copy of ``body`` that asks for a whole answer (no ``stream``, no ``stream_options``)."""
    copy = body.model_copy()
    copy.stream = None
    copy.stream_options = None
    copy.__pydantic_fields_set__.difference_update({"stream", "stream_options"})
    return copy


def ask_for_usage(body: ChatRequest) -> tuple[ChatRequest, bool]:
    """A streaming body that asks for the usage chunk (spend is counted from it), and whether the
    client did not ask for it itself, in which case the gateway strips it again."""
    if (body.stream_options or {}).get("include_usage"):
        return body, False
    copy = body.model_copy()
    copy.stream_options = {**(body.stream_options or {}), "include_usage": True}
    return copy, True


async def strip_usage(chunks: AsyncIterator[ChatChunk]) -> AsyncIterator[ChatChunk]:
    """Chunks as a client that did not ask for usage expects them: no usage chunk, no usage field."""
    try:
        async for chunk in chunks:
            if "usage" in chunk:
                if not chunk.get("choices"):
                    continue
                chunk = {key: value for key, value in chunk.items() if key != "usage"}
            yield chunk
    finally:
        await close_stream(chunks)


def replay_as_chunks(reply: ChatCompletion, include_usage: bool) -> AsyncIterator[ChatChunk]:
    """A whole completion as the chunk sequence a streaming client expects, field for field as OpenAI
    streams it: the role (and any text) in the first delta, then one delta per tool call carrying
    its ``index``, ``id``, ``type`` and function name and arguments, then the ``finish_reason``,
    then (when asked for) a usage chunk with no choices."""

    async def chunks() -> AsyncIterator[ChatChunk]:
        base: dict[str, Any] = {
            key: reply.get(key) for key in ("id", "created", "model", "system_fingerprint") if key in reply
        }
        base["object"] = "chat.completion.chunk"
        for choice in reply.get("choices") or ():
            for delta, finish in _replayed_deltas(choice):
                yield {
                    **base,
                    "choices": [
                        {"index": choice.get("index", 0), "delta": delta, "logprobs": None, "finish_reason": finish}
                    ],
                }
        if include_usage and reply.get("usage"):
            yield {**base, "choices": [], "usage": reply["usage"]}

    return chunks()


def _replayed_deltas(choice: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """One choice's deltas, each with its ``finish_reason`` (set on the last only)."""
    message: dict[str, Any] = dict(choice.get("message") or {})
    calls = message.pop("tool_calls", None) or []
    first = {key: value for key, value in message.items() if value is not None}
    first.setdefault("role", "assistant")
    deltas: list[tuple[dict[str, Any], str | None]] = [(first, None)]
    for position, call in enumerate(calls):
        function = call.get("function") or {}
        replayed = {
            "index": position,
            "id": call.get("id"),
            "type": call.get("type", "function"),
            "function": {"name": function.get("name"), "arguments": function.get("arguments", "")},
        }
        deltas.append(({"tool_calls": [replayed]}, None))
    deltas.append(({}, choice.get("finish_reason")))
    return deltas


class Pipeline:
    """A policy's compiled layers; shared by all requests, holds no per-request state."""

    __slots__ = ("layers", "needs_full_output")

    def __init__(self, layers: tuple[Layer, ...]) -> None:
        self.layers = layers
        self.needs_full_output = any(layer.needs_full_output for layer in layers)

    async def prepare(self, call: Call) -> None:
        """Let every layer shape the upstream-bound body, in declared order."""
        for layer in self.layers:
            await layer.prepare(call)

    def upstream_body(self, call: Call) -> ChatRequest:
        """The body as it will be sent (after ``prepare``): whole-answer policies never stream upstream."""
        return without_streaming(call.body) if call.stream and self.needs_full_output else call.body

    async def _finish(
        self, call: Call, reply: ChatCompletion, send: SendWhole, layers: Sequence[Layer]
    ) -> ChatCompletion:
        """Pass ``reply`` back through ``layers`` (innermost first). A layer that re-asks the upstream
        gets its new reply through the layers inside it, as the first reply came."""
        for position in range(len(layers) - 1, -1, -1):
            inner = layers[position + 1 :]

            async def resend(body: ChatRequest, inner: Sequence[Layer] = inner) -> ChatCompletion:
                outer = call.send_upstream
                try:
                    return await self._finish(call, await send(body), send, inner)
                finally:
                    call.send_upstream = outer

            call.send_upstream = resend
            reply = await layers[position].complete(call, reply)
        return reply

    async def complete(self, call: Call, send: SendWhole) -> ChatCompletion:
        """Prepare, call upstream once, and pass the reply back through the layers."""
        await self.prepare(call)
        reply = await send(self.upstream_body(call))
        return await self._finish(call, reply, send, self.layers)

    async def stream(self, call: Call, open_stream: OpenStream, send: SendWhole) -> AsyncIterator[ChatChunk]:
        """Prepare, then stream: chunk by chunk through each layer's ``stream`` hook, or, when a layer
        needs the whole answer, one checked reply replayed as chunks."""
        await self.prepare(call)
        if self.needs_full_output:

            async def send_whole(body: ChatRequest) -> ChatCompletion:
                return await send(without_streaming(body) if body.stream else body)

            reply = await send_whole(call.body)
            reply = await self._finish(call, reply, send_whole, self.layers)
            options = call.body.stream_options or {}
            return replay_as_chunks(reply, bool(options.get("include_usage")))
        chunks = await open_stream(call.body)
        for layer in reversed(self.layers):
            chunks = layer.stream(call, chunks)
        return chunks
