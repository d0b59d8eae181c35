"""Streamed responses that stop as soon as the client hangs up, without a listener task of their own.

Starlette's ``StreamingResponse`` runs its own ``http.disconnect`` listener in a task group (or, on
ASGI 2.4 servers, none at all and relies on a failing send, so a stream waiting on a slow upstream
would hold the upstream connection until its next chunk). Here ``gateway.hangup.HangupWatch``
listens for the whole request, from the moment its body has been read: a hang-up cancels the
request and this body iterator with it, whose ``finally`` closes the upstream request. Every
endpoint that streams reads its request body first, which is what starts that listener.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = ["SSE_HEADERS", "EventStreamResponse", "HangupAwareResponse"]

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
