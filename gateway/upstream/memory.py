"""An upstream that answers from a Python function: engine tests and dry runs with no socket.

The counterpart of httpx's ``MockTransport``: the handler sees each call (path, parsed body) and
returns a reply object, a list of stream events, or raises a ``PrefitError`` the engine must
handle. Every call is recorded in ``calls`` for the test to assert on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.upstream.base import ForwardedReply

__all__ = ["MemoryCall", "MemoryUpstream"]

Reply = dict[str, Any] | list[dict[str, Any]]
Handler = Callable[["MemoryCall"], Reply | Awaitable[Reply]]


@dataclass(slots=True)
class MemoryCall:
    """One call the engine made: what it sent and how."""

    path: str
    body: dict[str, Any]
    request_id: str
    stream: bool
    timeout_s: float | None


@dataclass
class MemoryUpstream:
    """Implements ``gateway.upstream.base.Upstream`` over ``handler``."""

    name: str
    handler: Handler
    models: list[dict[str, Any]] = field(default_factory=list)
    calls: list[MemoryCall] = field(default_factory=list)
    started: bool = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False

    def scrub(self, text: str) -> str:
        return text

    async def _reply(self, path: str, body: bytes, request_id: str, stream: bool, timeout_s: float | None) -> Reply:
        call = MemoryCall(path, orjson.loads(body), request_id, stream, timeout_s)
        self.calls.append(call)
        reply = self.handler(call)
        if isinstance(reply, Awaitable):
            reply = await reply
        return reply

    async def complete(self, path: str, body: bytes, request_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        reply = await self._reply(path, body, request_id, False, timeout_s)
        if not isinstance(reply, dict):
            raise TypeError("the handler returned stream events for a whole answer")
        return reply

    async def open_stream(
        self, path: str, body: bytes, request_id: str, timeout_s: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        reply = await self._reply(path, body, request_id, True, timeout_s)
        events = reply if isinstance(reply, list) else [reply]
        return _events(events)

    async def forward(
        self, method: str, path: str, query: str, headers: Iterable[tuple[str, str]], body: bytes, request_id: str
    ) -> ForwardedReply:
        reply = await self._reply(path, body or b"{}", request_id, False, None)
        return ForwardedReply(200, [("content-type", "application/json")], _chunks(orjson.dumps(reply)))

    async def list_models(self, request_id: str) -> list[dict[str, Any]]:
        return list(self.models)


async def _events(events: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for event in events:
        yield event


async def _chunks(raw: bytes) -> AsyncIterator[bytes]:
    yield raw
