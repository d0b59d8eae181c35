"""The playground's calls: the gateway's own ``/v1/render`` and ``/v1/chat/completions``, in process.

A console request becomes a fresh ASGI request to the real handlers, wrapped in the exchange
layer so it gets a request id and is counted in the metrics like any other call. It skips the
gateway-key check (an admin session is enough), carries the admin's own key so pinning a variant
is allowed, and comes from the browser's own address. Nothing leaves the process except the
upstream call that ``send`` makes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.routing import request_response
from starlette.types import ASGIApp, Message

from gateway.metrics import Metrics
from gateway.serving import endpoints
from gateway.serving.exchange import ExchangeMiddleware

__all__ = ["GatewayReply", "Playground", "chat_body"]

_MAX_MESSAGE_CHARS = 100_000


@dataclass(slots=True)
class GatewayReply:
    status: int
    headers: dict[str, str]
    body: Any
    elapsed_ms: float


def chat_body(data: object) -> tuple[dict[str, Any], str | None]:
    """The chat body and pinned variant a playground form asks for. Raises ``ValueError``."""
    if not isinstance(data, dict):
        raise ValueError("send a JSON object")
    policy, message = data.get("policy"), data.get("message")
    if not isinstance(policy, str) or not policy:
        raise ValueError("pick a policy")
    if not isinstance(message, str) or not message.strip():
        raise ValueError("type a message")
    if len(message) > _MAX_MESSAGE_CHARS:
        raise ValueError("the message is too long")
    messages: list[dict[str, str]] = []
    system = data.get("system")
    if isinstance(system, str) and system.strip():
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": message})
    body: dict[str, Any] = {"model": policy, "messages": messages, "stream": False}
    variant = data.get("variant")
    return body, (variant if isinstance(variant, str) and variant else None)


class Playground:
    def __init__(self, metrics: Metrics) -> None:
        self._apps: dict[str, ASGIApp] = {
            "/v1/render": ExchangeMiddleware(request_response(endpoints.render), metrics),
            "/v1/chat/completions": ExchangeMiddleware(request_response(endpoints.chat_completions), metrics),
        }

    async def call(
        self, request: Request, path: str, body: dict[str, Any], variant: str | None, admin_key: str | None
    ) -> GatewayReply:
        payload = orjson.dumps(body)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if admin_key is not None:
            headers.append((b"authorization", b"Bearer " + admin_key.encode()))
        if variant is not None:
            headers.append((b"x-prefit-variant", variant.encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": request.url.scheme,
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": request.scope.get("client"),
            "server": request.scope.get("server"),
            "app": request.app,
            "state": {},
        }
        done = asyncio.Event()
        sent_body = False
        status = 500
        reply_headers: dict[str, str] = {}
        parts: list[bytes] = []

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    reply_headers[name.decode("latin-1")] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        started = time.perf_counter()
        try:
            await self._apps[path](scope, receive, send)
        finally:
            done.set()
        elapsed_ms = (time.perf_counter() - started) * 1000
        raw = b"".join(parts)
        try:
            parsed: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = raw.decode("utf-8", "replace")
        return GatewayReply(status, reply_headers, parsed, elapsed_ms)
