"""Notice a client hang-up at any point of a request and stop the work done for it at once.

An ASGI server tells the app about a closed connection only through ``receive()``, and only if
someone is waiting on it. Nothing is while a handler awaits its upstream, so without this layer a
client that left before the first byte kept its upstream call open until the upstream answered or
its ``timeout_s`` ran out (a hundred clients hanging up left a hundred calls open).

Once the app has read the whole body through ``receive()``, the next message can only be
``http.disconnect``, so one small task waits for it from then on, for the whole life of the request:
while the handler waits upstream and while a streamed body is sent. When it comes before the answer
is complete, the request's task is cancelled (the upstream calls close in their ``finally``) and the
request is counted as ``499``. It is the request's only listener: the app's own ``receive()`` calls
after the body share its result, so streamed responses need no listener task of their own.

That task starts ``LISTEN_AFTER_S`` after the body was read, on a timer: a request answered sooner
(a cache hit, a fast upstream) never creates it, and a timer costs a fraction of a task. A hang-up
in those first milliseconds is noticed when they end. Requests that never read their body
(``GET /healthz``) start neither.
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.engine.record import CLIENT_CLOSED
from gateway.serving.exchange import exchange_of

__all__ = ["LISTEN_AFTER_S", "HangupWatch"]

#: How long after its body a request starts listening for a hang-up (see the module docstring).
LISTEN_AFTER_S = 0.002


class _Watch:
    """One request's listener: wraps its ``receive`` and ``send`` and cancels its task on a hang-up."""

    __slots__ = ("_listener", "_receive", "_send", "_timer", "answered", "cancelled", "finished", "hung_up", "task")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._timer: asyncio.TimerHandle | None = None
        self._listener: asyncio.Task[Message] | None = None
        self.task = asyncio.current_task()
        self.answered = False
        self.hung_up = False
        self.cancelled = False
        self.finished = False

    async def receive(self) -> Message:
        if self._timer is not None:
            return await asyncio.shield(self._listen())
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.hung_up = True
        elif message["type"] == "http.request" and not message.get("more_body", False):
            self._timer = asyncio.get_running_loop().call_later(LISTEN_AFTER_S, self._listen)
        return message

    def _listen(self) -> asyncio.Task[Message]:
        """The listener, started now if the timer has not started it yet."""
        if self._listener is None:
            assert self._timer is not None
            self._timer.cancel()
            self._listener = asyncio.ensure_future(self._receive())
            self._listener.add_done_callback(self._heard)
        return self._listener

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.answered = True
        await self._send(message)

    def _heard(self, listener: asyncio.Task[Message]) -> None:
        """The listener got its message; a disconnect before the answer is complete cancels the request.

        This runs as a loop callback, so the request's task is suspended inside the app right now.
        """
        if self.finished or self.answered or listener.cancelled() or listener.exception() is not None:
            return
        if listener.result()["type"] == "http.disconnect" and self.task is not None:
            self.hung_up = self.cancelled = True
            self.task.cancel()

    def settle(self) -> bool:
        """Take back this watch's own cancellation; True when nobody else cancelled the task too."""
        if not self.cancelled or self.task is None:
            return False
        self.cancelled = False
        return self.task.uncancel() == 0

    def stop(self) -> None:
        self.finished = True
        self.settle()
        if self._timer is not None:
            self._timer.cancel()
        if self._listener is not None and not self._listener.done():
            self._listener.cancel()


class HangupWatch:
    """ASGI middleware: a client that hangs up cancels its request, which is counted as ``499``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watch = _Watch(receive, send)
        try:
            await self.app(scope, watch.receive, watch.send)
        except asyncio.CancelledError:
            if not watch.settle():
                raise
        except ClientDisconnect:  # the client left while its body was being read
            if not watch.hung_up:
                raise
        finally:
            watch.stop()
            if watch.hung_up:
                exchange = exchange_of(scope)
                exchange.outcome = CLIENT_CLOSED
                exchange.error_code = "client_closed"
