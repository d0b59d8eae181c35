"""``POST /v1/responses``: the Responses API through a policy, whole or streamed.

The request becomes the chat body the policy's layers already edit (``gateway.engine.responses``)
and is answered as chat is (``gateway.serving.answer``: layers or chain steps, cache, retries,
fallbacks, rate limits, metrics, ``x-prefit-*`` headers). Each upstream is reached through its
``responses_api`` view (``gateway.engine.responses_upstream``); the answer goes back to the client
as a Responses object or event stream. Models that name no policy are forwarded as they came.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.engine.record import CLIENT_CLOSED, Exchange
from gateway.engine.responses import chat_of
from gateway.engine.responses_reply import output_items, response_of
from gateway.engine.responses_stream import events_of
from gateway.engine.responses_upstream import responses_view
from gateway.errors import InvalidRequest, PrefitError
from gateway.serving.answer import Answering, answer, reply_headers
from gateway.serving.exchange import exchange_of
from gateway.serving.http import JSON, endpoint, read_body, runtime_of
from gateway.serving.passthrough import forward
from gateway.serving.resolve import Route, admit, resolve
from gateway.serving.runtime import Snapshot
from gateway.serving.sse import EventStreamResponse
from gateway.upstream.base import Upstream
from gateway.wire import get_param, loads
from gateway.wire_responses import STATEFUL_FIELDS, ResponsesRequest, parse_responses_request
from middleware.base import close_stream

__all__ = ["responses"]


@endpoint
async def responses(request: Request) -> Response:
    """``POST /v1/responses`` through the model's policy; other models go to the default upstream as sent."""
    runtime = runtime_of(request)
    snapshot = runtime.current
    raw = await read_body(request, snapshot.config.settings.max_body_bytes)
    if not _names_policy(raw, snapshot):
        return await forward(request, raw)
    exchange = exchange_of(request.scope)
    body = parse_responses_request(raw)
    route = resolve(request, snapshot, body.model, exchange, body.user, body.metadata)
    _check_state(body, route, snapshot)
    await admit(request, snapshot, route, exchange)

    def view(upstream: Upstream) -> Upstream:
        return responses_view(upstream, snapshot.config.settings.upstreams[upstream.name].responses_api)

    ctx = Answering(request, runtime, snapshot, exchange, view=view)

    exchange.stream = stream = bool(body.stream)
    result = await answer(ctx, route, chat_of(body), stream)
    headers = reply_headers(exchange, ctx.response_headers)
    response_id = uuid.uuid4().hex
    if isinstance(result, dict):
        if exchange.costs:
            headers["x-prefit-cost-usd"] = f"{exchange.cost_usd:.8f}"
        return Response(orjson.dumps(_whole(body, result, response_id)), headers=headers, media_type=JSON)
    return EventStreamResponse(_sse(events_of(result, body, response_id), exchange), headers=headers)


def _names_policy(raw: bytes, snapshot: Snapshot) -> bool:
    """Whether the body names a policy; anything unparseable is the policy path's to refuse."""
    try:
        parsed = loads(raw)
    except orjson.JSONDecodeError:
        return True
    model = parsed.get("model") if isinstance(parsed, dict) else None
    return not isinstance(model, str) or model in snapshot.config.policies


def _check_state(body: ResponsesRequest, route: Route, snapshot: Snapshot) -> None:
    """A request that needs stored responses cannot run on an upstream that has none. Raises ``InvalidRequest``."""
    upstreams = snapshot.config.settings.upstreams
    names = [route.upstream.name]
    if route.variant is not None:
        names += [fallback.upstream for fallback in route.variant.spec.fallbacks]
    translated = [name for name in names if upstreams[name].responses_api == "translate"]
    if not translated:
        return
    asked = [name for name in STATEFUL_FIELDS if get_param(body, name) is not None]
    if body.store:
        asked.append("store")
    if asked:
        raise InvalidRequest(
            f"'{asked[0]}' needs responses stored by the server, but upstream '{translated[0]}' answers "
            "through chat completions (responses_api: translate) and keeps none; send the whole conversation "
            "in 'input' and set 'store' to false.",
            param=asked[0],
            code="unsupported_parameter",
        )


def _whole(body: ResponsesRequest, reply: dict[str, Any], response_id: str) -> dict[str, Any]:
    choice = (reply.get("choices") or [{}])[0]
    output = output_items(choice.get("message") or {}, response_id)
    return response_of(body, response_id, output, reply.get("usage"), choice.get("finish_reason"), reply.get("created"))


async def _sse(events: AsyncIterator[dict[str, Any]], exchange: Exchange) -> AsyncIterator[bytes]:
    """Responses events as SSE (``event:`` named, no ``[DONE]``); a failure mid-stream is a final ``error`` event."""
    sequence = 0
    try:
        async for event in events:
            sequence = event["sequence_number"] + 1
            if exchange.first_token_at is None and event["type"].endswith(".delta"):
                exchange.first_token_at = time.perf_counter()
            yield b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
    except PrefitError as exc:
        exchange.outcome = exc.status
        exchange.error_code = exc.code
        error = {
            "type": "error",
            "code": exc.code,
            "message": exc.message,
            "param": exc.param,
            "sequence_number": sequence,
        }
        yield b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"
    except asyncio.CancelledError:
        exchange.outcome = CLIENT_CLOSED
        exchange.error_code = "client_closed"
        raise
    finally:
        await close_stream(events)
