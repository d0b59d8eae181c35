"""Run a policy's layers around one upstream call, whole or streamed.

The pipeline does not know how the upstream is reached: routing hands it two callables, one that
returns a whole completion and one that opens a chunk stream. That keeps layers testable with no
network and keeps the socket layer in ``gateway.upstream`` alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from gateway.wire import ChatChunk, ChatCompletion, ChatRequest
from middleware.base import Call, Layer, PassThrough
from middleware.params import ParamsLayer

__all__ = ["LAYER_TYPES", "OpenStream", "Pipeline", "SendWhole"]

SendWhole = Callable[[ChatRequest], Awaitable[ChatCompletion]]
OpenStream = Callable[[ChatRequest], Awaitable[AsyncIterator[ChatChunk]]]

#: Every layer type in the order its ``prepare`` runs. A new capability adds its layer here.
LAYER_TYPES: tuple[type[PassThrough], ...] = (ParamsLayer,)


class Pipeline:
    """A policy's compiled layers; shared by all requests, holds no per-request state."""

    __slots__ = ("layers",)

    def __init__(self, layers: tuple[Layer, ...]) -> None:
        self.layers = layers

    async def prepare(self, call: Call) -> None:
        """Let every layer shape the upstream-bound body, in declared order."""
        for layer in self.layers:
            await layer.prepare(call)

    async def complete(self, call: Call, send: SendWhole) -> ChatCompletion:
        """Prepare, call upstream once, and pass the reply back through the layers."""
        await self.prepare(call)
        call.send_upstream = send
        reply = await send(call.body)
        for layer in reversed(self.layers):
            reply = await layer.complete(call, reply)
        return reply

    async def stream(self, call: Call, open_stream: OpenStream, send: SendWhole) -> AsyncIterator[ChatChunk]:
        """Prepare, open the upstream stream, and wrap it in each layer's ``stream`` hook.

        The innermost wrapper belongs to the last layer, so chunks meet layers in reverse order,
        as whole replies do.
        """
        await self.prepare(call)
        call.send_upstream = send
        chunks = await open_stream(call.body)
        for layer in reversed(self.layers):
            chunks = layer.stream(call, chunks)
        return chunks
