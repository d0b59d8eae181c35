"""The socket layer: one long-lived aiohttp session per upstream, and nothing else talks to providers.

Prefit's hot path is one upstream call per request, so this module uses aiohttp's client directly
(several times the throughput of httpx on the same work, measured in ``benchmarks/``). Like an
httpx transport it only moves bytes and translates failures: aiohttp exceptions and upstream error
statuses become ``gateway.errors.UpstreamError`` subclasses, raised ``from`` the original, with
the upstream's key scrubbed from anything a client or a log could see.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, AnyStr

import aiohttp
import orjson

from gateway.errors import UpstreamError, UpstreamPayload, UpstreamStatus, UpstreamTimeout, UpstreamUnreachable
from gateway.metrics import Metrics
from gateway.settings import UpstreamSettings
from middleware.base import close_stream

__all__ = ["HOP_BY_HOP", "BodyScrubber", "ForwardedReply", "Upstream", "UpstreamPool"]

log = logging.getLogger(__name__)

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
_SSE_DONE = b"[DONE]"
#: Shorter header values (``acme``, ``2024-06-01``) are too common to be secrets worth redacting.
_MIN_SECRET_LENGTH = 12
_REDACTED = "[redacted]"
_REDACTED_BYTES = _REDACTED.encode()


@dataclass(slots=True)
class ForwardedReply:
    """An upstream reply to a passthrough request, body still to be read as it arrives."""

    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the upstream asks us to wait: ``retry-after-ms``, or ``Retry-After`` in seconds or as a date."""
    millis = headers.get("retry-after-ms")
    if millis:
        with contextlib.suppress(ValueError):
            return max(0.0, float(millis) / 1000)
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _redact(text: AnyStr, secrets: Iterable[AnyStr], marker: AnyStr) -> AnyStr:
    """``text`` with every occurrence of every secret replaced by ``marker``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, marker)
    return text


def _partial_secret_start(data: bytes, secrets: Iterable[bytes]) -> int:
    """Where the longest end of ``data`` that could be the beginning of a secret starts; ``len(data)``
    when no end could be."""
    cut = len(data)
    for secret in secrets:
        first = secret[:1]
        at = data.find(first, max(0, len(data) - len(secret) + 1))
        while 0 <= at < cut:
            if secret.startswith(data[at:]):
                cut = at
                break
            at = data.find(first, at + 1)
    return cut


class BodyScrubber:
    """Redacts secrets from a body that arrives in parts, a secret split across two parts included.

    The end of a part is held back until the next one only when it could begin a secret (at most
    ``len(secret) - 1`` bytes), so a streamed body is not delayed when nothing there looks like one:
    an SSE event's closing blank line still goes out with its part.
    """

    __slots__ = ("_held", "_secrets")

    def __init__(self, secrets: tuple[bytes, ...]) -> None:
        self._secrets = secrets
        self._held = b""

    def feed(self, part: bytes) -> bytes:
        """What of the body so far can go out now, redacted."""
        data = _redact(self._held + part, self._secrets, _REDACTED_BYTES)
        cut = _partial_secret_start(data, self._secrets)
        self._held = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        """The held-back end, once the body is complete: it did not turn out to be a secret."""
        held, self._held = self._held, b""
        return held


def _split_events(buffer: bytearray) -> Iterable[bytes]:
    """Pop every complete SSE event (``\\n\\n``-terminated) from ``buffer``, returning their data."""
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return
        event = bytes(buffer[:end])
        del buffer[: end + 2]
        data = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if data:
            yield b"\n".join(data)


class Upstream:
    """One provider endpoint and its connection pool."""

    def __init__(self, name: str, settings: UpstreamSettings, metrics: Metrics) -> None:
        self.name = name
        self.settings = settings
        self.base_url = settings.base_url
        self._metrics = metrics
        self._secret = settings.api_key.get_secret_value() if settings.api_key else None
        #: Everything that may be a credential: the key and every configured header value (api-key style).
        self._secrets = tuple(
            s for s in (self._secret, *settings.headers.values()) if s and len(s) >= _MIN_SECRET_LENGTH
        )
        self._secret_bytes = tuple(s.encode() for s in self._secrets)
        self._auth_headers = dict(settings.headers)
        if self._secret:
            self._auth_headers["Authorization"] = f"Bearer {self._secret}"
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
        return _redact(text, self._secrets, _REDACTED)

    def _headers_for(self, request_id: str) -> dict[str, str]:
        return {**self._json_headers, "x-request-id": request_id}

    def _translate(self, exc: BaseException) -> UpstreamError:
        """Map an aiohttp or timeout failure onto Prefit's errors, without leaking the key."""
        if isinstance(exc, TimeoutError):
            error: UpstreamError = UpstreamTimeout(f"upstream {self.name!r} did not answer in time")
        elif isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.errno == errno.ECONNREFUSED:
            error = UpstreamUnreachable(
                f"upstream {self.name!r} is unreachable: connection refused by {exc.host}:{exc.port}"
            )
        elif isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError):
            error = UpstreamUnreachable(f"upstream {self.name!r} is unreachable: {self.scrub(str(exc))}")
        elif isinstance(exc, aiohttp.ClientPayloadError):
            error = UpstreamPayload(f"upstream {self.name!r} broke off its answer")
        else:
            error = UpstreamUnreachable(f"upstream {self.name!r} failed: {exc.__class__.__name__}")
        self._metrics.count_upstream_error(self.name, error.reason)
        return error

    async def _status_error(self, response: aiohttp.ClientResponse) -> UpstreamStatus:
        raw = await response.read()
        text = self.scrub(raw.decode("utf-8", "replace"))
        content_type = response.headers.get("Content-Type", "application/json")
        self._metrics.count_upstream_error(self.name, f"status_{response.status // 100}xx")
        return UpstreamStatus(
            response.status,
            text.encode(),
            content_type,
            f"upstream {self.name!r} answered {response.status}",
            retry_after=_retry_after(response.headers),
        )

    # -- calls -------------------------------------------------------------------------------

    def _deadline(self, timeout_s: float | None) -> float:
        """This call's time budget: the upstream's own, cut short by the request's remaining deadline."""
        return self.settings.timeout_s if timeout_s is None else max(0.001, min(self.settings.timeout_s, timeout_s))

    async def post_json(
        self, path: str, body: bytes, request_id: str, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """POST a JSON body and return the parsed JSON reply. Raises ``UpstreamError``."""
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self._deadline(timeout_s)):
                async with self.session.post(
                    self.base_url + path, data=body, headers=self._headers_for(request_id), timeout=self._whole_timeout
                ) as response:
                    if response.status >= 400:
                        raise await self._status_error(response)
                    raw = await response.read()
        except UpstreamError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._translate(exc) from exc
        finally:
            self._metrics.observe_upstream(self.name, time.perf_counter() - start)
        try:
            reply = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._metrics.count_upstream_error(self.name, "invalid_json")
            raise UpstreamError(f"upstream {self.name!r} answered with invalid JSON") from None
        if not isinstance(reply, dict):
            raise UpstreamError(f"upstream {self.name!r} answered with a JSON {type(reply).__name__}, not an object")
        return reply

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
            async with asyncio.timeout(budget):
                response = await self.session.post(
                    self.base_url + path, data=body, headers=self._headers_for(request_id)
                )
                if response.status >= 400:
                    try:
                        raise await self._status_error(response)
                    finally:
                        response.release()
        except UpstreamError:
            self._metrics.observe_upstream(self.name, time.perf_counter() - start)
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._metrics.observe_upstream(self.name, time.perf_counter() - start)
            raise self._translate(exc) from exc
        events = self._events(response, start)
        try:
            async with asyncio.timeout(max(0.001, budget - (time.perf_counter() - start))):
                first = await anext(events)
        except StopAsyncIteration:
            return _empty()
        except TimeoutError as exc:
            await close_stream(events)
            raise self._translate(exc) from exc
        except BaseException:
            await close_stream(events)
            raise
        return _prepend(first, events)

    async def _events(self, response: aiohttp.ClientResponse, start: float) -> AsyncIterator[dict[str, Any]]:
        """Parse SSE from ``response``; closing this generator early closes the upstream connection."""
        buffer = bytearray()
        finished = False
        try:
            content_type = response.headers.get("Content-Type", "")
            if "text/event-stream" not in content_type:
                raw = await response.read()
                finished = True
                yield self._json_event(raw, whole_reply=True)
                return
            async for data in response.content.iter_any():
                buffer += data.replace(b"\r\n", b"\n")
                for payload in _split_events(buffer):
                    if payload == _SSE_DONE:
                        finished = True
                        return
                    yield self._json_event(payload, whole_reply=False)
            finished = True
            if buffer.strip():
                for payload in _split_events(buffer + b"\n\n"):
                    if payload != _SSE_DONE:
                        yield self._json_event(payload, whole_reply=False)
        except UpstreamError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._translate(exc) from exc
        finally:
            if finished:
                response.release()
            else:
                response.close()
            self._metrics.observe_upstream(self.name, time.perf_counter() - start)

    def _json_event(self, payload: bytes, *, whole_reply: bool) -> dict[str, Any]:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._metrics.count_upstream_error(self.name, "invalid_json")
            raise UpstreamError(f"upstream {self.name!r} sent an event that is not JSON") from None
        if not isinstance(event, dict):
            raise UpstreamError(f"upstream {self.name!r} sent an event that is not a JSON object")
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
            async with asyncio.timeout(self.settings.timeout_s):
                response = await self.session.request(method, url, data=body or None, headers=out)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._metrics.observe_upstream(self.name, time.perf_counter() - start)
            raise self._translate(exc) from exc
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
        scrubber = BodyScrubber(self._secret_bytes)
        try:
            async for data in response.content.iter_any():
                if out := scrubber.feed(data):
                    yield out
            finished = True
            if rest := scrubber.flush():
                yield rest
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._translate(exc) from exc
        finally:
            if finished:
                response.release()
            else:
                response.close()
            self._metrics.observe_upstream(self.name, time.perf_counter() - start)

    async def list_models(self, request_id: str) -> list[dict[str, Any]]:
        """The upstream's ``GET /models`` list. Raises ``UpstreamError``."""
        start = time.perf_counter()
        try:
            async with asyncio.timeout(min(self.settings.timeout_s, 10.0)):
                headers = {**self._auth_headers, "x-request-id": request_id}
                async with self.session.get(self.base_url + "/models", headers=headers) as response:
                    if response.status >= 400:
                        raise await self._status_error(response)
                    raw = await response.read()
        except UpstreamError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._translate(exc) from exc
        finally:
            self._metrics.observe_upstream(self.name, time.perf_counter() - start)
        try:
            data = orjson.loads(raw).get("data", [])
        except (orjson.JSONDecodeError, AttributeError):
            raise UpstreamError(f"upstream {self.name!r} sent a model list that is not JSON") from None
        return [item for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)]


async def _empty() -> AsyncIterator[dict[str, Any]]:
    return
    yield  # pragma: no cover - makes this an async generator


async def _prepend(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """Yield ``first`` then ``rest``, closing ``rest`` however the consumer stops."""
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        await close_stream(rest)


class UpstreamPool:
    """All upstreams of one configuration, started and closed together."""

    def __init__(self, settings: Mapping[str, UpstreamSettings], metrics: Metrics) -> None:
        self._upstreams = {name: Upstream(name, spec, metrics) for name, spec in settings.items()}

    def __getitem__(self, name: str) -> Upstream:
        return self._upstreams[name]

    def __contains__(self, name: object) -> bool:
        return name in self._upstreams

    async def start(self) -> None:
        for upstream in self._upstreams.values():
            await upstream.start()

    async def close(self) -> None:
        for upstream in self._upstreams.values():
            await upstream.close()

    def scrub(self, text: str) -> str:
        for upstream in self._upstreams.values():
            text = upstream.scrub(text)
        return text
