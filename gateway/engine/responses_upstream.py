"""How a Responses request's chat body reaches one upstream, per its ``responses_api`` setting.

Both are ``Upstream`` views around the real upstream, so dispatch (cache, retries, breakers,
fallbacks, usage and spend) runs unchanged on the chat body and chat replies it already knows:

- ``NativeResponses`` (``native``): the chat body becomes a Responses body sent to ``/responses``;
  the reply (or event stream) comes back as a chat completion (or chunks).
- ``ChatForResponses`` (``translate``): the chat body goes to ``/chat/completions`` without the
  Responses-only fields, for servers that have no ``/responses`` (vLLM, llama.cpp, Ollama).

Each wrapper keeps the upstream's ``name``, so breakers and metrics are shared with chat traffic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson

from gateway.engine.responses import RESPONSES_ONLY, responses_body_of
from gateway.engine.responses_reply import chat_reply_of
from gateway.engine.responses_stream import chunks_of
from gateway.upstream.base import ForwardedReply, Upstream

__all__ = ["ChatForResponses", "NativeResponses", "responses_view"]


class _View:
    """An ``Upstream`` that changes only how model calls are made."""

    def __init__(self, inner: Upstream) -> None:
        self.inner = inner
        self.name = inner.name

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def scrub(self, text: str) -> str:
        return self.inner.scrub(text)

    async def forward(
        self, method: str, path: str, query: str, headers: Iterable[tuple[str, str]], body: bytes, request_id: str
    ) -> ForwardedReply:
        return await self.inner.forward(method, path, query, headers, body, request_id)

    async def list_models(self, request_id: str) -> list[dict[str, Any]]:
        return await self.inner.list_models(request_id)


class NativeResponses(_View):
    """Chat bodies sent as Responses bodies to ``/responses``; replies read back as chat."""

    async def complete(self, path: str, body: bytes, request_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        sent = orjson.dumps(responses_body_of(orjson.loads(body)))
        return chat_reply_of(await self.inner.complete("/responses", sent, request_id, timeout_s))

    async def open_stream(
        self, path: str, body: bytes, request_id: str, timeout_s: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        sent = orjson.dumps(responses_body_of(orjson.loads(body)))
        return chunks_of(await self.inner.open_stream("/responses", sent, request_id, timeout_s))


class ChatForResponses(_View):
    """Chat bodies sent as chat, without the fields only the Responses API knows."""

    @staticmethod
    def _chat(body: bytes) -> bytes:
        chat = orjson.loads(body)
        return orjson.dumps({key: value for key, value in chat.items() if key not in RESPONSES_ONLY})

    async def complete(self, path: str, body: bytes, request_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        return await self.inner.complete(path, self._chat(body), request_id, timeout_s)

    async def open_stream(
        self, path: str, body: bytes, request_id: str, timeout_s: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        return await self.inner.open_stream(path, self._chat(body), request_id, timeout_s)


def responses_view(upstream: Upstream, mode: str) -> Upstream:
    """``upstream`` as a Responses request reaches it: ``native`` or ``translate``."""
    return NativeResponses(upstream) if mode == "native" else ChatForResponses(upstream)
