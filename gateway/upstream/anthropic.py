"""Anthropic's native Messages API behind the upstream seam, so a policy swaps GPT for Claude in one line.

The engine and every layer keep speaking chat completions: this upstream takes the final chat body,
sends ``POST /v1/messages`` (``x-api-key``, ``anthropic-version``), and returns OpenAI-shaped replies,
stream chunks and error bodies. Sockets, deadlines, SSE framing, scrubbing and the mapping of
foreign failures are the OpenAI implementation's, inherited; the translation lives in
``anthropic_wire`` and ``anthropic_stream``. Error statuses keep their code (429 with its
``retry-after``, 529 overloaded), so retries, breakers and fallbacks treat them as for any upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson

from gateway.errors import InvalidRequest, UpstreamStatus
from gateway.metrics import Metrics
from gateway.settings import UpstreamSettings
from gateway.upstream.anthropic_stream import StreamTranslator, openai_error_body
from gateway.upstream.anthropic_wire import to_chat_completion, to_messages_request
from gateway.upstream.base import ForwardedReply
from gateway.upstream.openai import OpenAIUpstream
from middleware.base import close_stream

__all__ = ["AnthropicUpstream"]

_CHAT_PATH = "/chat/completions"
_MESSAGES_PATH = "/messages"


class AnthropicUpstream(OpenAIUpstream):
    """Implements ``gateway.upstream.base.Upstream`` for the Anthropic Messages API."""

    models_path = "/models?limit=1000"

    def __init__(self, name: str, settings: UpstreamSettings, metrics: Metrics) -> None:
        super().__init__(name, settings, metrics)
        self.base_url = settings.base_url + "/v1"
        self._auth_headers = {**settings.headers, "anthropic-version": settings.anthropic_version}
        if settings.api_key:
            self._auth_headers["x-api-key"] = settings.api_key.get_secret_value()
        self._json_headers = {**self._auth_headers, "Content-Type": "application/json"}

    def _messages_body(self, path: str, body: bytes, *, stream: bool) -> bytes:
        """The Messages request for a chat body; what cannot be translated is a 400 from this upstream
        (a client error: neither retried nor held against the upstream's health)."""
        try:
            if path != _CHAT_PATH:
                raise InvalidRequest(
                    f"Upstream {self.name!r} speaks the Anthropic Messages API, which has no {path} endpoint; "
                    "only chat completions can be sent to it."
                )
            request = to_messages_request(orjson.loads(body))
        except InvalidRequest as error:
            raise UpstreamStatus(400, orjson.dumps(error.to_body()), "application/json", error.message) from error
        request["stream"] = stream
        return orjson.dumps(request)

    def _openai_status(self, error: UpstreamStatus) -> UpstreamStatus:
        """The same status (and ``retry-after``), with OpenAI's error body."""
        return UpstreamStatus(
            error.status,
            openai_error_body(error.body),
            "application/json",
            error.message,
            retry_after=error.retry_after,
        )

    async def complete(self, path: str, body: bytes, request_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """A whole chat completion, answered by ``POST /v1/messages``. Raises ``UpstreamError``."""
        request = self._messages_body(path, body, stream=False)
        try:
            message = await super().complete(_MESSAGES_PATH, request, request_id, timeout_s)
        except UpstreamStatus as error:
            raise self._openai_status(error) from error
        return to_chat_completion(message)

    async def open_stream(
        self, path: str, body: bytes, request_id: str, timeout_s: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Chat completion chunks, translated from the Messages stream. Raises ``UpstreamError``."""
        request = self._messages_body(path, body, stream=True)
        try:
            events = await super().open_stream(_MESSAGES_PATH, request, request_id, timeout_s)
        except UpstreamStatus as error:
            raise self._openai_status(error) from error
        return self._chunks(events)

    async def _chunks(self, events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        translator = StreamTranslator(self.name)
        try:
            async for event in events:
                for chunk in translator.feed(event):
                    yield chunk
        finally:
            await close_stream(events)

    async def forward(
        self, method: str, path: str, query: str, headers: Iterable[tuple[str, str]], body: bytes, request_id: str
    ) -> ForwardedReply:
        """Passthrough sends OpenAI paths unchanged, which an Anthropic API would not understand."""
        raise InvalidRequest(
            f"{path} has no policy here, and passthrough needs an OpenAI-compatible default upstream; "
            f"the default upstream {self.name!r} speaks the Anthropic Messages API."
        )
