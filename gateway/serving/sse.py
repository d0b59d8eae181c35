"""A Server-Sent Events response that always notices a client hang-up.

Starlette's ``StreamingResponse`` stops listening for ``http.disconnect`` when a server speaks
ASGI 2.4 and relies on a failing send instead; a stream waiting on a slow upstream would then hold
the upstream connection until its next chunk. Here the listener always runs, so a hang-up cancels
the body iterator at once and its ``finally`` closes the upstream request.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = ["SSE_HEADERS", "EventStreamResponse", "HangupAwareResponse"]

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class HangupAwareResponse(StreamingResponse):
    """A streamed body that is cancelled as soon as the client disconnects."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream_then_stop() -> None:
                with contextlib.suppress(OSError):
                    await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(stream_then_stop)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()


class EventStreamResponse(HangupAwareResponse):
    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], headers: Mapping[str, str], status_code: int = 200) -> None:
        super().__init__(events, status_code=status_code, headers={**SSE_HEADERS, **headers})
