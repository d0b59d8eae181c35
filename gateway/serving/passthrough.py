"""Any other ``/v1/*`` path: forwarded to the default upstream as it came, the reply streamed back
as it comes (credentials scrubbed on the way, by the upstream)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from gateway.engine.record import CLIENT_CLOSED, Exchange
from gateway.errors import (
    MethodNotAllowed,
    NotFound,
    PrefitError,
    UpstreamTimeout,
)
from gateway.serving.exchange import exchange_of
from gateway.serving.http import endpoint, read_body, runtime_of
from gateway.serving.resolve import caller
from gateway.serving.sse import HangupAwareResponse
from middleware.base import close_stream

__all__ = ["forward", "passthrough"]


_FORWARDED_METHODS_WITH_BODY = {"POST", "PUT", "PATCH", "DELETE"}


@endpoint
async def passthrough(request: Request) -> Response:
    """Any other ``/v1/*`` path: sent to the default upstream as it came, the reply streamed back as it comes."""
    config = runtime_of(request).current.config
    if config.settings.default_upstream is None:
        raise NotFound(f"No upstream serves {request.url.path} on this gateway.")
    _safe_forward_path(request)
    # Read even when it is not forwarded: a consumed body is what lets a hang-up be noticed (HangupWatch).
    body = await read_body(request, config.settings.max_body_bytes)
    return await forward(request, body)


async def forward(request: Request, body: bytes) -> Response:
    """``request`` (its ``body`` already read) sent to the default upstream, the reply streamed back.
    Raises ``PrefitError``."""
    snapshot = runtime_of(request).current
    config = snapshot.config
    exchange = exchange_of(request.scope)
    default = config.settings.default_upstream
    if default is None:
        raise NotFound(f"No upstream serves {request.url.path} on this gateway.")
    forwarded_path = _safe_forward_path(request)
    if request.method not in _FORWARDED_METHODS_WITH_BODY:
        body = b""
    exchange.policy, exchange.upstream, exchange.model = "passthrough", default, "other"
    if snapshot.limiter.applies(None):
        await snapshot.limiter.admit(caller(request, snapshot), exchange.policy, None)
    reply = await snapshot.upstreams[default].forward(
        request.method,
        forwarded_path,
        request.url.query,
        request.headers.items(),
        body,
        exchange.request_id,
    )
    deadline = time.monotonic() + config.settings.resilience.request_deadline_s
    response = HangupAwareResponse(_guarded(reply.body, exchange, deadline), status_code=reply.status)
    response.raw_headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1", "replace")) for name, value in reply.headers
    ] + [(b"x-prefit-upstream", default.encode()), (b"x-prefit-policy", b"passthrough")]
    return response


_OWN_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/render"})


def _safe_forward_path(request: Request) -> str:
    """The path to forward under the upstream's base URL. Raises ``NotFound`` (404) for a path
    that could leave that base (dot segments, encoded slashes) and ``MethodNotAllowed`` (405) for one
    of the gateway's own endpoints called with another method or a trailing slash."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    raw_path = raw.split(b"?", 1)[0].decode("latin-1")
    segments = request.url.path.split("/")
    if "%2f" in raw_path.lower() or "%5c" in raw_path.lower() or any(s in (".", "..") for s in segments):
        raise NotFound(f"No upstream serves {raw_path} on this gateway.")
    if request.url.path.rstrip("/") in _OWN_ENDPOINTS:
        raise MethodNotAllowed(
            f"{request.method} {request.url.path} is not supported; use POST without a trailing slash"
            if request.url.path.rstrip("/") != "/v1/models"
            else f"{request.method} {request.url.path} is not supported"
        )
    return request.url.path.removeprefix("/v1")


async def _guarded(body: AsyncIterator[bytes], exchange: Exchange, deadline: float) -> AsyncIterator[bytes]:
    """A forwarded body that ends (and is counted as failed) if the upstream breaks off mid-way or the
    request's deadline passes."""
    try:
        async for part in body:
            if time.monotonic() > deadline:
                raise UpstreamTimeout("the request's deadline passed while the body was streaming")
            yield part
    except PrefitError as exc:
        exchange.outcome = exc.status
        exchange.error_code = exc.code
        # Re-raised so the server drops the connection: the client sees a broken body, not a short one.
        raise ConnectionAbortedError(exc.message) from exc
    except asyncio.CancelledError:
        exchange.outcome = CLIENT_CLOSED
        raise
    finally:
        await close_stream(body)
