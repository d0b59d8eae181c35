"""The one interface every request/response layer implements.

A policy is compiled at load time into an ordered tuple of layers. Per request the pipeline runs
each layer's ``prepare`` in order (editing ``call.body``, the request bound for the upstream),
sends the body upstream, then hands the reply back through the layers in reverse order:
``complete`` for a whole answer, ``stream`` for chunks as they arrive.

Layers keep no per-request state on ``self``: a layer instance is shared by every request of its
policy, so what a request needs goes in ``call.notes[type(self)]``. What a layer did that the
gateway reports (text injected, a validation result, a vector-store search, a stage's time) it
tells ``call.observer`` as it happens; layers never know where that goes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

from gateway.policy import PolicySpec
from gateway.wire import ChatChunk, ChatCompletion, ChatMessage, ChatRequest

__all__ = [
    "QUIET",
    "BuildContext",
    "Call",
    "CallObserver",
    "FileSource",
    "Layer",
    "LayerError",
    "PassThrough",
    "Passage",
    "QuietObserver",
    "ResourceError",
    "Resources",
    "SourceText",
    "StoreUse",
    "close_stream",
    "system_message",
]

FieldPath = tuple[str | int, ...]


class LayerError(ValueError):
    """A policy a layer cannot build from; names the policy field and, for files, where in them."""

    def __init__(
        self,
        field: FieldPath,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.file = file
        self.line = line
        self.column = column


@dataclass(frozen=True, slots=True)
class SourceText:
    """Text from a policy field: inline, or read from the file a ``file:`` reference names."""

    text: str
    origin: str | None = None


class FileSource(Protocol):
    """Resolves ``file:`` references safely; raises ``LayerError`` for a missing or escaping path."""

    def read(self, field: FieldPath, value: str) -> SourceText: ...


@dataclass(frozen=True, slots=True)
class Passage:
    """One stored item a search found: its id, similarity score and payload."""

    id: str
    score: float
    payload: dict[str, Any]


class Resources(Protocol):
    """Shared clients a layer may use, given at build time; their calls never block the event loop."""

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors for ``texts``. Raises ``ResourceError``."""
        ...

    async def search(
        self,
        collection: str,
        vector: list[float],
        top_k: int,
        min_score: float | None,
        filter: dict[str, str] | None,
        text: str | None = None,
    ) -> list[Passage]:
        """The closest stored items; with the query's ``text``, a hybrid (dense + BM25) search where
        the collection holds sparse vectors. Raises ``ResourceError``."""
        ...


class ResourceError(Exception):
    """An embedder or vector store could not answer (missing model, store down, unknown collection).

    ``reason`` says why in a word from a bounded set (a metric label): ``store_locked``,
    ``store_unreachable``, ``collection_missing``, ``embedder_mismatch``, ``embed_failed``,
    ``timeout`` or ``other``.
    """

    def __init__(self, message: str, reason: str = "other") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StoreUse:
    """One search a layer made (or could not make) in the vector store, for the log, metrics and
    ``/readyz``: the layer (``retrieval`` or ``few_shot``), the collection, and when it failed,
    the ``ResourceError``'s reason and message (never the request's text)."""

    layer: str
    collection: str
    reason: str | None = None
    message: str = ""

    @classmethod
    def failed(cls, layer: str, collection: str, error: ResourceError) -> StoreUse:
        return cls(layer, collection, error.reason, str(error))


class _InlineOnly:
    def read(self, field: FieldPath, value: str) -> SourceText:
        if value.startswith("file:"):
            raise LayerError(field, "file: references need a policy file to resolve against")
        return SourceText(value)


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a layer may know while it is built: the policy, its files, the upstream's features."""

    policy_name: str
    policy_dir: Path
    files: FileSource = field(default_factory=_InlineOnly)
    supports_json_schema: bool = True
    resources: Resources | None = None


class CallObserver(Protocol):
    """Hears what the layers of one call did, as they do it (the gateway turns it into metrics, the
    log and ``/readyz``; render into its verdict). Subclass ``QuietObserver`` to hear only some."""

    def stage(self, stage: str, seconds: float) -> None:
        """A layer's stage took ``seconds`` (``prefit_stage_duration_seconds``)."""

    def injected(self, chars: int) -> None:
        """A layer added ``chars`` characters of text to the request (``tokens_total{kind=injected}``)."""

    def validated(self, result: str) -> None:
        """The output layer's verdict: ``valid``, ``repaired`` or ``invalid``."""

    def retrieved(self, hits: int) -> None:
        """A retrieval found ``hits`` passages (``prefit_retrieval_hits``)."""

    def searched(self, use: StoreUse) -> None:
        """A vector-store search ran, or could not (``use.reason``)."""


class QuietObserver:
    """Hears nothing: the default for calls nobody reports on (unit tests, dry runs)."""

    __slots__ = ()

    def stage(self, stage: str, seconds: float) -> None:
        return None

    def injected(self, chars: int) -> None:
        return None

    def validated(self, result: str) -> None:
        return None

    def retrieved(self, hits: int) -> None:
        return None

    def searched(self, use: StoreUse) -> None:
        return None


QUIET = QuietObserver()


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
    response_headers: dict[str, str] = field(default_factory=dict)
    notes: dict[type, Any] = field(default_factory=dict)
    send_upstream: Callable[[ChatRequest], Awaitable[ChatCompletion]] = _no_upstream
    observer: CallObserver = QUIET
    system: ChatMessage | None = None

    @contextmanager
    def timer(self, stage: str) -> Iterator[None]:
        """Time a block as ``prefit_stage_duration_seconds{stage=...}``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observer.stage(stage, time.perf_counter() - start)


def system_message(call: Call) -> ChatMessage:
    """The policy's own system message, created first in the conversation if no layer made it yet."""
    if call.system is None:
        call.system = ChatMessage(role="system", content="")
        call.body.messages.insert(0, call.system)
    return call.system


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

        Raises ``LayerError`` naming the field when the policy is unusable.
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
