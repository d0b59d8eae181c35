"""The one interface every request/response layer implements.

A policy is compiled at load time into an ordered tuple of layers. Per request the pipeline runs
each layer's ``prepare`` in order (editing ``call.body``, the request bound for the upstream),
sends the body upstream, then hands the reply back through the layers in reverse order:
``complete`` for a whole answer, ``stream`` for chunks as they arrive.

Layers keep no per-request state on ``self``: a layer instance is shared by every request of its
policy, so what a request needs goes in ``call.notes[type(self)]``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

from gateway.policy import PolicySpec
from gateway.wire import ChatChunk, ChatCompletion, ChatRequest

__all__ = ["BuildContext", "Call", "Layer", "PassThrough", "Resources", "close_stream"]


class Resources(Protocol):
    """Shared clients a layer may use (embedder, vector store, cache); given at build time."""


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a layer may know while it is built: the policy's name, its folder and shared clients."""

    policy_name: str
    policy_dir: Path
    resources: Resources | None = None


def _ignore_stage(stage: str, seconds: float) -> None:
    return None


async def _no_upstream(body: ChatRequest) -> ChatCompletion:
    raise RuntimeError("this call has no upstream (render mode)")


@dataclass(slots=True, eq=False)
class Call:
    """The one mutable object of a request, shared by its layers."""

    request_id: str
    body: ChatRequest
    policy: str = ""
    variant: str = ""
    prompt_version: str = ""
    upstream: str = ""
    stream: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)
    notes: dict[type, Any] = field(default_factory=dict)
    send_upstream: Callable[[ChatRequest], Awaitable[ChatCompletion]] = _no_upstream
    observe_stage: Callable[[str, float], None] = _ignore_stage

    @contextmanager
    def timer(self, stage: str) -> Iterator[None]:
        """Time a block as ``prefit_stage_duration_seconds{stage=...}``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe_stage(stage, time.perf_counter() - start)


class Layer(Protocol):
    """What the pipeline calls; subclass ``PassThrough`` rather than implementing this from scratch."""

    stage: ClassVar[str]
    needs_full_output: ClassVar[bool]

    async def prepare(self, call: Call) -> None: ...

    async def complete(self, call: Call, reply: ChatCompletion) -> ChatCompletion: ...

    def stream(self, call: Call, chunks: AsyncIterator[ChatChunk]) -> AsyncIterator[ChatChunk]: ...


class PassThrough:
    """A layer that does nothing; override only the hooks a layer needs."""

    stage: ClassVar[str] = "render"
    needs_full_output: ClassVar[bool] = False

    @classmethod
    def build(cls, spec: PolicySpec, context: BuildContext) -> Self | None:
        """Compile what the layer needs from the policy; None when the policy does not use it.

        Raises ``ValueError`` with a message for the policy's author when the spec is unusable.
        """
        return cls()

    async def prepare(self, call: Call) -> None:
        return None

    async def complete(self, call: Call, reply: ChatCompletion) -> ChatCompletion:
        return reply

    def stream(self, call: Call, chunks: AsyncIterator[ChatChunk]) -> AsyncIterator[ChatChunk]:
        return chunks


async def close_stream(chunks: AsyncIterator[Any]) -> None:
    """Close an async iterator if it can be closed (async generators can), freeing what it holds upstream."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
