"""Streamed responses that stop as soon as the client hangs up, without a listener task of their own.

Starlette's ``StreamingResponse`` runs its own ``http.disconnect`` listener in a task group (or, on
ASGI 2.4 servers, none at all and relies on a failing send, so a stream waiting on a slow upstream
would hold the upstream connection until its next chunk). Here ``gateway.serving.hangup.HangupWatch``
listens for the whole request, from the moment its body has been read: a hang-up cancels the
request and this body iterator with it, whose ``finally`` closes the upstream request. Every
endpoint that streams reads its request body first, which is what starts that listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.engine.record import CLIENT_CLOSED, Exchange
from gateway.errors import PrefitError
from gateway.serving.http import error_body
from middleware.base import close_stream

__all__ = ["SSE_HEADERS", "EventStreamResponse", "HangupAwareResponse", "has_content", "sse_events"]

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class HangupAwareResponse(StreamingResponse):
    """A streamed body, cancelled with its request when the client disconnects (see ``HangupWatch``).

    A failing send (the client is gone) or a body that breaks off on purpose (``ConnectionAbortedError``)
    ends the response quietly; the server then drops the connection.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(OSError):
            await self.stream_response(send)


class EventStreamResponse(HangupAwareResponse):
    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], headers: Mapping[str, str], status_code: int = 200) -> None:
        super().__init__(events, status_code=status_code, headers={**SSE_HEADERS, **headers})


def has_content(chunk: dict[str, Any]) -> bool:
    """Whether a chunk carries any of the answer (for time to first token)."""
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict):
            delta = choice.get("delta")
            if isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls") or delta.get("refusal")):
                return True
            if choice.get("text"):
                return True
    return False


async def sse_events(chunks: AsyncIterator[dict[str, Any]], exchange: Exchange) -> AsyncIterator[bytes]:
    """Serialise chunks as SSE; a failure mid-stream becomes a final OpenAI error event, never silence."""
    try:
        async for chunk in chunks:
            if exchange.first_token_at is None and has_content(chunk):
                exchange.first_token_at = time.perf_counter()
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        yield b"data: [DONE]\n\n"
    except PrefitError as exc:
        exchange.outcome = exc.status
        exchange.error_code = exc.code
        yield b"data: " + error_body(exc) + b"\n\n"
    except asyncio.CancelledError:
        exchange.outcome = CLIENT_CLOSED
        exchange.error_code = "client_closed"
        raise
    finally:
        await close_stream(chunks)
