"""HTTP plumbing every endpoint shares: the runtime, the body read once, and the one place a
``PrefitError`` becomes a response (whole, or as the final SSE event of a stream)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.engine.record import Exchange
from gateway.errors import (
    BodyTooLarge,
    PrefitError,
    UpstreamStatus,
)
from gateway.serving.exchange import exchange_of
from gateway.serving.runtime import Runtime

__all__ = ["JSON", "Handler", "endpoint", "error_body", "error_response", "prefit_headers", "read_body", "runtime_of"]


JSON = "application/json"

Handler = Callable[[Request], Awaitable[Response]]


def runtime_of(request: Request) -> Runtime:
    """The running gateway; read its ``current`` snapshot once per request."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def error_body(exc: PrefitError) -> bytes:
    """OpenAI's ``{"error": {...}}`` for ``exc``: the body of an error response, or the data of the
    final event of a stream that failed after its first byte (``gateway.serving.sse``)."""
    return orjson.dumps(exc.to_body())


def error_response(exc: PrefitError, headers: dict[str, str] | None = None) -> Response:
    """``exc`` as a whole response with its status; an upstream's own error body as it sent it."""
    merged = {**(headers or {}), **exc.headers}
    if isinstance(exc, UpstreamStatus):
        return Response(exc.body, status_code=exc.status, headers=merged, media_type=exc.content_type)
    return Response(error_body(exc), status_code=exc.status, headers=merged, media_type=JSON)


def endpoint(handler: Handler) -> Handler:
    """Wrap a handler so a ``PrefitError`` becomes its OpenAI-shaped response and is noted for the log."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except PrefitError as exc:
            exchange = exchange_of(request.scope)
            exchange.error_code = exc.code
            return error_response(exc, prefit_headers(exchange) if exchange.policy != "none" else None)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"The request body is larger than this gateway accepts ({limit} bytes).")
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise BodyTooLarge(f"The request body is larger than this gateway accepts ({limit} bytes).")
        parts.append(part)
    return b"".join(parts)


def prefit_headers(exchange: Exchange) -> dict[str, str]:
    """The ``x-prefit-*`` headers every policy response carries, from the request's record."""
    return {
        "x-prefit-policy": exchange.policy,
        "x-prefit-variant": exchange.variant,
        "x-prefit-prompt-version": exchange.prompt_version,
        "x-prefit-upstream": exchange.upstream,
    }
