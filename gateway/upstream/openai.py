"""OpenAI-compatible providers (OpenAI, vLLM, llama.cpp, Ollama, TEI...) over one aiohttp session each.

Prefit's hot path is one upstream call per request, so this module uses aiohttp's client directly
(several times the throughput of httpx on the same work, measured in ``benchmarks/``). Like an
httpx transport it only moves bytes: the body arrives serialised, replies leave parsed, and every
failure leaves through ``gateway.upstream.errors`` with the key scrubbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
import orjson

from gateway.errors import UpstreamError
from gateway.metrics import Metrics
from gateway.settings import UpstreamSettings
from gateway.upstream.base import ForwardedReply
from gateway.upstream.errors import status_error, translate, translated
from gateway.upstream.scrub import Secrets
from gateway.upstream.sse import SSE_DONE, empty, prepend, split_events
from middleware.base import close_stream

__all__ = ["HOP_BY_HOP", "OpenAIUpstream"]

#: Headers that describe one connection, never the message (RFC 9110 section 7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: Client headers never forwarded upstream: the gateway sets these itself or they are the client's secrets.
_CLIENT_HEADERS_DROPPED = HOP_BY_HOP | {
    "host",
    "authorization",
    "content-length",
    "accept-encoding",
    "cookie",
    "api-key",
    "x-api-key",
    "x-request-id",
}
#: Upstream reply headers never returned: the body is re-framed and decompressed by the gateway.
_REPLY_HEADERS_DROPPED = HOP_BY_HOP | {"content-length", "content-encoding", "set-cookie", "server", "date"}


class OpenAIUpstream:
    """Implements ``gateway.upstream.base.Upstream`` for one OpenAI-compatible endpoint and its pool."""

    #: Where ``list_models`` reads the model list, under the base URL.
    models_path = "/models"

    def __init__(self, name: str, settings: UpstreamSettings, metrics: Metrics) -> None:
        self.name = name
        self.settings = settings
        self.base_url = settings.base_url
        self._metrics = metrics
        self._secrets = Secrets(settings)
        self._auth_headers = dict(settings.headers)
        if settings.api_key:
            self._auth_headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._json_headers = {**self._auth_headers, "Content-Type": "application/json"}
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the pool; must run inside the serving event loop."""
        s = self.settings
        connector = aiohttp.TCPConnector(limit=s.max_connections, ttl_dns_cache=60, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=None, connect=s.connect_timeout_s, sock_read=s.read_timeout)
        # Whole answers are bounded by one asyncio deadline around the call; a per-read timer on top
        # costs a timer handle per read for nothing.
        self._whole_timeout = aiohttp.ClientTimeout(total=None, connect=s.connect_timeout_s, sock_read=None)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, read_bufsize=2**17, raise_for_status=False
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"upstream {self.name!r} is not started")
        return self._session

    # -- helpers -----------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """Remove this upstream's key (and configured header values) from text a client or a log may see."""
        return self._secrets.scrub(text)

    def _translated(self) -> contextlib.AbstractContextManager[None]:
        return translated(self.name, self._metrics, self.scrub)

    def _headers_for(self, request_id: str) -> dict[str, str]:
        return {**self._json_headers, "x-request-id": request_id}

    def _deadline(self, timeout_s: float | None) -> float:
        """This call's time budget: the upstream's own, cut short by the request's remaining deadline."""
        return self.settings.timeout_s if timeout_s is None else max(0.001, min(self.settings.timeout_s, timeout_s))

    def _observe(self, start: float) -> None:
        self._metrics.observe_upstream(self.name, time.perf_counter() - start)

    def _end(self, response: aiohttp.ClientResponse, finished: bool, start: float) -> None:
        """A read body's end: a finished reply's connection back to the pool, a body left part-way
        closed (so the upstream stops sending), and the call's duration observed."""
        if finished:
            response.release()
        else:
            response.close()
        self._observe(start)

    # -- calls -------------------------------------------------------------------------------

    async def _read(
        self, method: str, url: str, headers: dict[str, str], budget: float, data: bytes | None = None
    ) -> bytes:
        """One whole request and its whole reply body, inside ``budget`` seconds. Raises ``UpstreamError``
        (an error status as ``UpstreamStatus``, with the provider's scrubbed body)."""
        start = time.perf_counter()
        try:
            with self._translated():
                async with asyncio.timeout(budget):
                    async with self.session.request(
                        method, url, data=data, headers=headers, timeout=self._whole_timeout
                    ) as response:
                        if response.status >= 400:
                            raise await status_error(response, self.name, self._metrics, self.scrub)
                        return await response.read()
        finally:
            self._observe(start)

    async def complete(self, path: str, body: bytes, request_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """POST a JSON body and return the parsed JSON reply. Raises ``UpstreamError``."""
        raw = await self._read(
            "POST", self.base_url + path, self._headers_for(request_id), self._deadline(timeout_s), body
        )
        return self._json_object(raw)

    def _json_object(self, raw: bytes, what: str = "answer") -> dict[str, Any]:
        """``raw`` as a JSON object; anything else is this upstream's fault. Raises ``UpstreamError``."""
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._metrics.count_upstream_error(self.name, "invalid_json")
            raise UpstreamError(f"upstream {self.name!r} sent an {what} that is not JSON") from None
        if not isinstance(parsed, dict):
            raise UpstreamError(
                f"upstream {self.name!r} sent an {what} that is a JSON {type(parsed).__name__}, not an object"
            )
        return parsed

    async def open_stream(
        self, path: str, body: bytes, request_id: str, timeout_s: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """POST a streaming request and return its SSE events as parsed JSON objects.

        The first event is awaited here, under the upstream's deadline, so that a failure before any
        content still becomes a real HTTP error status for the client. Raises ``UpstreamError``.
        """
        start = time.perf_counter()
        budget = self._deadline(timeout_s)
        try:
            with self._translated():
                async with asyncio.timeout(budget):
                    response = await self.session.post(
                        self.base_url + path, data=body, headers=self._headers_for(request_id)
                    )
                    if response.status >= 400:
                        try:
                            raise await status_error(response, self.name, self._metrics, self.scrub)
                        finally:
                            response.release()
        except BaseException:
            self._observe(start)
            raise
        events = self._events(response, start)
        try:
            async with asyncio.timeout(max(0.001, budget - (time.perf_counter() - start))):
                first = await anext(events)
        except StopAsyncIteration:
            return empty()
        except TimeoutError as exc:
            await close_stream(events)
            raise translate(exc, self.name, self._metrics, self.scrub) from exc
        except BaseException:
            await close_stream(events)
            raise
        return prepend(first, events)

    async def _events(self, response: aiohttp.ClientResponse, start: float) -> AsyncIterator[dict[str, Any]]:
        """Parse SSE from ``response``; closing this generator early closes the upstream connection."""
        buffer = bytearray()
        finished = False
        try:
            with self._translated():
                if "text/event-stream" not in response.headers.get("Content-Type", ""):
                    raw = await response.read()
                    finished = True
                    yield self._json_event(raw, whole_reply=True)
                    return
                async for data in response.content.iter_any():
                    buffer += data.replace(b"\r\n", b"\n")
                    for payload in split_events(buffer):
                        if payload == SSE_DONE:
                            finished = True
                            return
                        yield self._json_event(payload, whole_reply=False)
                finished = True
                if buffer.strip():
                    for payload in split_events(buffer + b"\n\n"):
                        if payload != SSE_DONE:
                            yield self._json_event(payload, whole_reply=False)
        finally:
            self._end(response, finished, start)

    def _json_event(self, payload: bytes, *, whole_reply: bool) -> dict[str, Any]:
        event = self._json_object(payload, "event")
        if event.get("error"):
            self._metrics.count_upstream_error(self.name, "stream_error")
            detail = event["error"].get("message") if isinstance(event["error"], dict) else event["error"]
            raise UpstreamError(self.scrub(f"upstream {self.name!r} reported an error: {detail}"))
        if whole_reply:
            raise UpstreamError(f"upstream {self.name!r} did not stream its answer")
        return event

    async def forward(
        self, method: str, path: str, query: str, headers: Iterable[tuple[str, str]], body: bytes, request_id: str
    ) -> ForwardedReply:
        """Send a request through unchanged but for its headers; the reply body streams back as it comes,
        with the upstream's key scrubbed from headers and body.

        Raises ``UpstreamError`` when no reply (not even an error status) arrives in time.
        """
        out = {name.lower(): value for name, value in headers if name.lower() not in _CLIENT_HEADERS_DROPPED}
        out.update((name.lower(), value) for name, value in self._auth_headers.items())
        out["x-request-id"] = request_id
        url = self.base_url + path + (f"?{query}" if query else "")
        start = time.perf_counter()
        try:
            with self._translated():
                async with asyncio.timeout(self.settings.timeout_s):
                    response = await self.session.request(method, url, data=body or None, headers=out)
        except BaseException:
            self._observe(start)
            raise
        reply_headers = [
            (name, self.scrub(value))
            for name, value in response.headers.items()
            if name.lower() not in _REPLY_HEADERS_DROPPED
        ]
        return ForwardedReply(response.status, reply_headers, self._raw_body(response, start))

    async def _raw_body(self, response: aiohttp.ClientResponse, start: float) -> AsyncIterator[bytes]:
        """The reply body as it arrives, scrubbed like every other reply: an upstream error body may
        echo the key it was sent."""
        finished = False
        scrubber = self._secrets.body_scrubber()
        try:
            with self._translated():
                async for data in response.content.iter_any():
                    if out := scrubber.feed(data):
                        yield out
                finished = True
                if rest := scrubber.flush():
                    yield rest
        finally:
            self._end(response, finished, start)

    async def list_models(self, request_id: str) -> list[dict[str, Any]]:
        """The upstream's ``GET /models`` list. Raises ``UpstreamError``."""
        headers = {**self._auth_headers, "x-request-id": request_id}
        raw = await self._read("GET", self.base_url + self.models_path, headers, min(self.settings.timeout_s, 10.0))
        try:
            data = orjson.loads(raw).get("data", [])
        except (orjson.JSONDecodeError, AttributeError):
            raise UpstreamError(f"upstream {self.name!r} sent a model list that is not JSON") from None
        return [item for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)]
