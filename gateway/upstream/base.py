"""The upstream seam: what the engine needs from a model provider, and nothing more.

Like httpx's transport base class, this is the whole contract. The engine (dispatch, resilience,
the model catalog, passthrough) only ever holds an ``Upstream``; which provider and which socket
library sit behind it is the business of one module each:

- ``gateway.upstream.openai``: OpenAI-compatible APIs over one long-lived aiohttp session.
- ``gateway.upstream.anthropic``: Anthropic's Messages API, translated to and from chat completions.
- ``gateway.upstream.memory``: answers from a Python function, for engine tests and dry runs.

A new provider is one new module implementing this protocol, plus one line in
``gateway.upstream.pool``, which picks the implementation from the upstream's settings.

Every method raises only ``gateway.errors.UpstreamError`` subclasses for upstream failures:
foreign exceptions are translated at the provider's edge (see ``gateway.upstream.errors``), and
nothing a client or a log can see carries the upstream's key (``scrub``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["ForwardedReply", "Upstream"]


@dataclass(slots=True)
class ForwardedReply:
    """An upstream reply to a passthrough request, body still to be read as it arrives."""

    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]


@runtime_checkable
class Upstream(Protocol):
    """One provider endpoint: a name, four calls, and a lifecycle.

    ``path`` is relative to the provider's base URL (``/chat/completions``); ``body`` is the final
    request body, serialised once by the engine; ``timeout_s`` is what is left of the request's
    deadline (None: the upstream's own ``timeout_s``).
    """

    name: str

    async def start(self) -> None:
        """Open connection pools; runs inside the serving event loop."""

    async def close(self) -> None:
        """Close whatever ``start`` opened; safe to call twice."""

    def scrub(self, text: str) -> str:
        """``text`` with this upstream's credentials removed."""

    async def complete(self, path: str, body: bytes, request_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """A whole answer as a JSON object. Raises ``UpstreamError``."""

    async def open_stream(
        self, path: str, body: bytes, request_id: str, timeout_s: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """A streamed answer as parsed events. The first event has arrived when this returns, so an
        early failure is still a real status for the client. Raises ``UpstreamError``."""

    async def forward(
        self, method: str, path: str, query: str, headers: Iterable[tuple[str, str]], body: bytes, request_id: str
    ) -> ForwardedReply:
        """Send a request through unchanged but for its credentials. Raises ``UpstreamError``."""

    async def list_models(self, request_id: str) -> list[dict[str, Any]]:
        """The provider's model list (objects with an ``id``). Raises ``UpstreamError``."""
