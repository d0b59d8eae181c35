"""The model endpoints: chat completions (whole and streamed), render, completions and embeddings.

Each parses its body once into the wire models, resolves the model (``gateway.serving.resolve``),
and hands over to the engine (``gateway.serving.answer``); errors become responses in
``gateway.serving.http``."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import (
    InvalidRequest,
)
from gateway.serving.answer import (
    Answering,
    answer,
    dispatch_for,
    reply_headers,
)
from gateway.serving.completions import apply_policy_prompt
from gateway.serving.exchange import exchange_of
from gateway.serving.http import JSON, endpoint, prefit_headers, read_body, runtime_of
from gateway.serving.render import render_request
from gateway.serving.resolve import Route, admit, resolve, sticky_value
from gateway.serving.sse import EventStreamResponse, sse_events
from gateway.wire import ChatRequest, get_param, parse_chat_request, parse_model_request

__all__ = ["chat_completions", "completions", "embeddings", "render"]


async def _chat_request(request: Request) -> tuple[Answering, ChatRequest, Route]:
    """Parse a chat body, resolve its model and apply rate limits: how chat and render both begin.
    Raises ``PrefitError``."""
    runtime = runtime_of(request)
    snapshot = runtime.current
    exchange = exchange_of(request.scope)
    chat = parse_chat_request(await read_body(request, snapshot.config.settings.max_body_bytes))
    route = resolve(request, snapshot, chat.model, exchange, chat.user, chat.metadata)
    await admit(request, snapshot, route, exchange)
    return Answering(request, runtime, snapshot, exchange), chat, route


@endpoint
async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions``, whole or streamed, through the model's policy."""
    ctx, chat, route = await _chat_request(request)
    exchange = ctx.exchange
    exchange.stream = stream = bool(chat.stream)
    taps = request.app.state.taps
    plan = taps.plan(route, chat, exchange.pinned)
    result = await answer(ctx, route, chat, stream)
    if plan is not None:
        result = taps.attach(plan, ctx, route, result)
    headers = reply_headers(exchange, ctx.response_headers)
    if isinstance(result, dict):
        if exchange.costs:
            headers["x-prefit-cost-usd"] = f"{exchange.cost_usd:.8f}"
        return Response(orjson.dumps(result), headers=headers, media_type=JSON)
    return EventStreamResponse(sse_events(result, exchange), headers=headers)


@endpoint
async def render(request: Request) -> Response:
    """``POST /v1/render``: the chat body in, the final upstream body out; nothing is sent upstream.

    Counted as a request of the policy and variant it rendered, with ``upstream`` and ``model``
    "none" (nothing was called); a vector-store search that cannot run fails it with the cause.
    """
    exchange_of(request.scope).calls_upstream = False
    ctx, chat, route = await _chat_request(request)  # render may embed and search: it counts as a request
    snapshot, exchange = ctx.snapshot, ctx.exchange
    sticky = sticky_value(route.policy, request, chat.user, chat.metadata) if route.policy else None
    rendered = await render_request(
        route.policy,
        route.variant,
        chat,
        exchange.request_id,
        exchange.upstream,
        snapshot.config.policies,
        sticky,
        ctx.runtime.store_health.observe_one,
    )
    return Response(orjson.dumps(rendered), headers=prefit_headers(exchange), media_type=JSON)


async def _model_call(request: Request, path: str, *, apply_params: bool, streams: bool) -> Response:
    """Completions and embeddings: the policy picks upstream and model (for completions, its prompt and
    examples go into the prompt text: ``gateway.serving.completions``); the body is otherwise the client's.

    ``streams``: whether the endpoint can stream at all; asking one that cannot is the client's mistake.
    """
    runtime = runtime_of(request)
    snapshot = runtime.current
    exchange = exchange_of(request.scope)
    body = parse_model_request(await read_body(request, snapshot.config.settings.max_body_bytes))
    if body.stream and not streams:
        raise InvalidRequest(
            f"{request.url.path} does not stream its answer; remove 'stream' or set it to false.",
            param="stream",
            code="unsupported_parameter",
        )
    route = resolve(request, snapshot, body.model, exchange)
    await admit(request, snapshot, route, exchange)
    if route.variant is not None:
        if path == "/completions":
            await apply_policy_prompt(route, body, exchange, runtime)
        spec = route.variant.spec
        body.model = route.variant.upstream_model
        if apply_params:
            for name, value in spec.params.items():
                if get_param(body, name) is None:
                    setattr(body, name, value)
            for name, value in spec.force.items():
                setattr(body, name, value)
    exchange.stream = bool(body.stream)
    dispatch = dispatch_for(request, runtime, snapshot, route, exchange, path)
    if exchange.stream:
        chunks = await dispatch.open_stream(body)
        return EventStreamResponse(sse_events(chunks, exchange), headers=prefit_headers(exchange))
    reply = await dispatch.send(body)
    return Response(orjson.dumps(reply), headers=prefit_headers(exchange), media_type=JSON)


@endpoint
async def completions(request: Request) -> Response:
    """``POST /v1/completions`` (legacy text completions)."""
    return await _model_call(request, "/completions", apply_params=True, streams=True)


@endpoint
async def embeddings(request: Request) -> Response:
    """``POST /v1/embeddings``."""
    return await _model_call(request, "/embeddings", apply_params=False, streams=False)
