"""The outermost ASGI layer: request id, timing, one metrics record and one access-log line per request.

Everything a request learns on its way (policy, variant, upstream model, tokens, outcome) is
written on its ``Exchange``; this layer turns that into metrics and the access log exactly once,
after the last byte of the response, streams included. Unexpected exceptions end here as a 500
``internal_error`` that carries the request id; the traceback goes to the log, never the client.

Labels say what happened: a render calls no upstream and is counted with ``upstream`` and
``model`` "none"; answers that reported no usage (so their tokens and spend are unknown) are
counted in ``prefit_usage_missing_total``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.engine.record import Exchange
from gateway.errors import PrefitError
from gateway.metrics import Metrics
from gateway.serving.access_log import AccessLog

__all__ = ["ExchangeMiddleware", "exchange_of"]

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_COUNTED_PREFIX = "/v1/"


def exchange_of(scope: Scope) -> Exchange:
    exchange = scope["state"]["exchange"]
    assert isinstance(exchange, Exchange)
    return exchange


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _REQUEST_ID.match(value):
            return str(value.decode())
    return uuid.uuid4().hex


class ExchangeMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: AccessLog | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(_request_id(scope), scope["method"], scope["path"], time.perf_counter())
        scope.setdefault("state", {})["exchange"] = exchange
        id_header = (b"x-prefit-request-id", exchange.request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                exchange.status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": exchange.request_id}})
            exchange.error_code = "internal_error"
            if started:
                exchange.outcome = 500
            else:
                await _send_internal_error(send_with_id, exchange.request_id)
        finally:
            self._record(exchange)

    def _record(self, exchange: Exchange) -> None:
        elapsed = time.perf_counter() - exchange.start
        for callback in exchange.on_done:
            try:
                callback(exchange)
            except Exception:
                log.exception("request completion hook failed")
        if exchange.path.startswith(_COUNTED_PREFIX):
            self._count(exchange, elapsed)
        if self.access_log is not None:
            self.access_log.write(_access_fields(exchange, elapsed))

    def _count(self, exchange: Exchange, elapsed: float) -> None:
        m = self.metrics
        policy, variant = exchange.policy, exchange.variant
        upstream, model = exchange.upstream_labels
        m.requests.child(policy, variant, exchange.prompt_version, upstream, model, str(exchange.final_status)).inc()
        m.request_duration.child(policy, variant).observe(elapsed)
        if exchange.first_token_at is not None:
            m.ttft.child(policy, variant).observe(exchange.first_token_at - exchange.start)
        if exchange.prompt_tokens:
            m.tokens.child(policy, variant, "prompt").inc(exchange.prompt_tokens)
        if exchange.completion_tokens:
            m.tokens.child(policy, variant, "completion").inc(exchange.completion_tokens)
        if exchange.injected_tokens:
            m.tokens.child(policy, variant, "injected").inc(exchange.injected_tokens)
        for model, usd in exchange.costs.items():
            m.cost.child(policy, variant, model).inc(usd)
        if exchange.usage_missing:
            m.usage_missing.child(policy, variant, upstream).inc(exchange.usage_missing)


def _access_fields(exchange: Exchange, elapsed: float) -> dict[str, object]:
    fields: dict[str, object] = {
        "request_id": exchange.request_id,
        "method": exchange.method,
        "path": exchange.path,
        "status": exchange.final_status,
        "duration_ms": round(elapsed * 1000, 3),
    }
    if exchange.policy != "none":
        upstream, model = exchange.upstream_labels
        fields.update(
            policy=exchange.policy,
            variant=exchange.variant,
            prompt_version=exchange.prompt_version,
            upstream=upstream,
            model=model,
            stream=exchange.stream,
            prompt_tokens=exchange.prompt_tokens,
            completion_tokens=exchange.completion_tokens,
        )
    if exchange.first_token_at is not None:
        fields["ttft_ms"] = round((exchange.first_token_at - exchange.start) * 1000, 3)
    if exchange.cache:
        fields["cache"] = exchange.cache
    if exchange.costs:
        fields["cost_usd"] = round(exchange.cost_usd, 8)
    if exchange.usage_missing:
        fields["usage_missing"] = exchange.usage_missing
    if exchange.error_code:
        fields["error"] = exchange.error_code
    return fields


async def _send_internal_error(send: Send, request_id: str) -> None:
    error = PrefitError(f"The gateway failed to handle this request (request id {request_id}).")
    body = orjson.dumps(error.to_body())
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
