"""HTTP endpoints: parse once, resolve the model to a policy variant or passthrough, run, reply.

Each endpoint turns a ``PrefitError`` into OpenAI's error shape right here (``error_response``),
so the one error mapping lives in this module; anything else is left to the exchange layer's 500.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.config.load import LoadedPolicy, LoadedVariant
from gateway.engine.chain import Chain, ChainStep
from gateway.engine.dispatch import Dispatch
from gateway.engine.pipeline import Pipeline
from gateway.engine.record import CLIENT_CLOSED, Exchange
from gateway.engine.resilience import Target
from gateway.errors import (
    BodyTooLarge,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    PermissionDenied,
    PrefitError,
    UpstreamStatus,
    UpstreamTimeout,
)
from gateway.metrics import CONTENT_TYPE_LATEST
from gateway.serving.auth import bearer_token, is_local
from gateway.serving.exchange import exchange_of
from gateway.serving.render import render_request
from gateway.serving.runtime import Runtime, Snapshot
from gateway.serving.sse import EventStreamResponse, HangupAwareResponse
from gateway.upstream.openai import Upstream
from gateway.wire import ChatRequest, get_param, parse_chat_request, parse_model_request
from middleware.base import Call, close_stream

__all__ = [
    "chat_completions",
    "completions",
    "embeddings",
    "error_response",
    "healthz",
    "list_models",
    "metrics_endpoint",
    "passthrough",
    "readyz",
    "render",
]

_PASSTHROUGH = Pipeline(())
_JSON = "application/json"
_PIN_HEADER = "x-prefit-variant"
#: A rough, tokenizer-free estimate for ``prefit_tokens_total{kind="injected"}``.
_CHARS_PER_TOKEN = 4
Handler = Callable[[Request], Awaitable[Response]]


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def error_response(exc: PrefitError, headers: dict[str, str] | None = None) -> Response:
    """OpenAI's ``{"error": {...}}`` with the matching status; an upstream's own error body as sent."""
    merged = {**(headers or {}), **exc.headers}
    if isinstance(exc, UpstreamStatus):
        return Response(exc.body, status_code=exc.status, headers=merged, media_type=exc.content_type)
    return Response(orjson.dumps(exc.to_body()), status_code=exc.status, headers=merged, media_type=_JSON)


def endpoint(handler: Handler) -> Handler:
    """Wrap a handler so a ``PrefitError`` becomes its OpenAI-shaped response and is noted for the log."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except PrefitError as exc:
            exchange = exchange_of(request.scope)
            exchange.error_code = exc.code
            return error_response(exc, _prefit_headers(exchange) if exchange.policy != "none" else None)

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


# -- model resolution -------------------------------------------------------------------------


class _Route:
    """Where one request goes: a policy variant and its upstream, or passthrough to the default.

    ``chain`` is set when this route runs a chain's steps; a chain's inline step routes to the same
    variant without it.
    """

    __slots__ = ("chain", "pipeline", "policy", "upstream", "variant")

    def __init__(
        self,
        policy: LoadedPolicy | None,
        variant: LoadedVariant | None,
        upstream: Upstream,
        pipeline: Pipeline,
        chain: Chain | None = None,
    ) -> None:
        self.policy = policy
        self.variant = variant
        self.upstream = upstream
        self.pipeline = pipeline
        self.chain = chain


def _sticky_value(
    policy: LoadedPolicy, request: Request, user: str | None, metadata: dict[str, Any] | None
) -> str | None:
    key = policy.spec.sticky_key
    if key == "user":
        return user
    if key.startswith("header:"):
        return request.headers.get(key[7:])
    value = (metadata or {}).get(key[9:])
    return value if isinstance(value, str) else None


def _pinned_variant(request: Request, snapshot: Snapshot) -> str | None:
    """A variant the caller pins with ``x-prefit-variant``; only admins (or, with no admin keys, loopback)."""
    pinned = request.headers.get(_PIN_HEADER)
    if pinned is None:
        return None
    trusted = (
        snapshot.admin_keys.allows(bearer_token(request.scope)) if snapshot.admin_keys else is_local(request.scope)
    )
    if not trusted:
        raise PermissionDenied(f"Pinning a variant with {_PIN_HEADER} needs an admin key.")
    return pinned


def _resolve(
    request: Request,
    snapshot: Snapshot,
    model: str,
    exchange: Exchange,
    user: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> _Route:
    """Find the policy variant for ``model``, else the default upstream. Raises ``ModelNotFound``."""
    config = snapshot.config
    policy = config.policies.get(model)
    if policy is not None:
        variant = policy.select(_pinned_variant(request, snapshot), _sticky_value(policy, request, user, metadata))
        exchange.policy = policy.name
        exchange.variant = variant.name
        exchange.prompt_version = variant.prompt_version
        exchange.upstream = variant.upstream
        exchange.model = variant.upstream_model
        return _Route(policy, variant, snapshot.upstreams[variant.upstream], variant.pipeline, variant.chain)
    default = config.settings.default_upstream
    if default is None:
        raise ModelNotFound(f"The model '{model}' does not exist or you do not have access to it.", param="model")
    exchange.policy = "passthrough"
    exchange.upstream = default
    exchange.model = model if snapshot.catalog.knows(model) else "other"
    return _Route(None, None, snapshot.upstreams[default], _PASSTHROUGH)


def _prefit_headers(exchange: Exchange) -> dict[str, str]:
    return {
        "x-prefit-policy": exchange.policy,
        "x-prefit-variant": exchange.variant,
        "x-prefit-prompt-version": exchange.prompt_version,
        "x-prefit-upstream": exchange.upstream,
    }


# -- streaming --------------------------------------------------------------------------------


def _has_content(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict):
            delta = choice.get("delta")
            if isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls") or delta.get("refusal")):
                return True
            if choice.get("text"):
                return True
    return False


async def _sse_events(chunks: AsyncIterator[dict[str, Any]], exchange: Exchange) -> AsyncIterator[bytes]:
    """Serialise chunks as SSE; a failure mid-stream becomes a final OpenAI error event, never silence."""
    try:
        async for chunk in chunks:
            if exchange.first_token_at is None and _has_content(chunk):
                exchange.first_token_at = time.perf_counter()
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        yield b"data: [DONE]\n\n"
    except PrefitError as exc:
        exchange.outcome = exc.status
        exchange.error_code = exc.code
        yield b"data: " + orjson.dumps(exc.to_body()) + b"\n\n"
    except asyncio.CancelledError:
        exchange.outcome = CLIENT_CLOSED
        exchange.error_code = "client_closed"
        raise
    finally:
        await close_stream(chunks)


# -- endpoints --------------------------------------------------------------------------------


def _new_call(route: _Route, chat: ChatRequest, exchange: Exchange, runtime: Runtime) -> Call:
    policy, variant = route.policy, route.variant
    return Call(
        request_id=exchange.request_id,
        body=chat,
        policy=policy.name if policy is not None else exchange.policy,
        variant=variant.name if variant is not None else exchange.variant,
        prompt_version=variant.prompt_version if variant is not None else exchange.prompt_version,
        upstream=route.upstream.name,
        stream=bool(chat.stream),
        observe_stage=runtime.metrics.observe_stage,
    )


def _note_call(call: Call, exchange: Exchange, runtime: Runtime) -> None:
    """What the layers did, for metrics: injected text, the validation result, store searches."""
    exchange.injected_tokens += math.ceil(call.injected_chars / _CHARS_PER_TOKEN)
    if call.validation is not None:
        runtime.metrics.output_validation.child(call.policy, call.validation).inc()
    if call.retrieval_hits is not None:
        runtime.metrics.retrieval_hits.child(call.policy).observe(call.retrieval_hits)
    _note_store(runtime, call)


def _note_store(runtime: Runtime, call: Call) -> None:
    """Vector-store searches, so one that could not run is logged, counted and shown in ``/readyz``."""
    if call.store_uses:
        runtime.store_health.observe(call.policy, call.store_uses)


def _caller(request: Request, snapshot: Snapshot) -> str:
    """Who is asking, for rate limits: the gateway key (hashed), else the client's address."""
    token = bearer_token(request.scope)
    if snapshot.gateway_keys and token:
        return "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return "addr:" + (request.client.host if request.client else "unknown")


async def _admit(request: Request, snapshot: Snapshot, route: _Route, exchange: Exchange) -> None:
    """Apply rate limits now and count the tokens once the answer is in. Raises ``RateLimited``."""
    limits = route.variant.spec.rate_limit if route.variant is not None else None
    if not snapshot.limiter.applies(limits):
        return
    caller = _caller(request, snapshot)
    await snapshot.limiter.admit(caller, exchange.policy, limits)
    limiter = snapshot.limiter

    def count_tokens(done: Exchange) -> None:
        limiter.record_tokens(caller, done.policy, limits, done.prompt_tokens + done.completion_tokens)

    exchange.on_done.append(count_tokens)


def _dispatch(
    request: Request, runtime: Runtime, snapshot: Snapshot, route: _Route, exchange: Exchange, path: str
) -> Dispatch:
    targets = [Target(route.upstream, None)]
    spec = route.variant.spec if route.variant is not None else None
    if spec is not None:
        targets += [Target(snapshot.upstreams[f.upstream], f.upstream_model) for f in spec.fallbacks]
    return Dispatch(
        path,
        targets,
        exchange,
        runtime.resilience,
        snapshot.config.settings.resilience.request_deadline_s,
        cache=snapshot.cache if path == "/chat/completions" else None,
        cache_spec=spec.cache if spec is not None else None,
        cache_control=request.headers.get("cache-control"),
        label_model=spec is not None,
        prices=snapshot.config.settings.prices,
    )


def _reply_headers(exchange: Exchange, call_headers: dict[str, str]) -> dict[str, str]:
    headers = {**_prefit_headers(exchange), **call_headers}
    if exchange.cache is not None:
        headers["x-prefit-cache"] = exchange.cache
    return headers


@dataclass(slots=True)
class _Answering:
    """What every step of one chat request shares: where it came from, what serves it, what it did."""

    request: Request
    runtime: Runtime
    snapshot: Snapshot
    exchange: Exchange
    response_headers: dict[str, str] = field(default_factory=dict)


async def _answer(
    ctx: _Answering, route: _Route, body: ChatRequest, stream: bool
) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
    """One policy variant (or passthrough) answers ``body``: a chain runs its steps, anything else its layers."""
    if route.chain is not None:
        return await _run_chain(ctx, route, body, stream)
    call = _new_call(route, body, ctx.exchange, ctx.runtime)
    call.stream = stream
    dispatch = _dispatch(ctx.request, ctx.runtime, ctx.snapshot, route, ctx.exchange, "/chat/completions")
    try:
        if stream:
            return await route.pipeline.stream(call, dispatch.open_stream, dispatch.send)
        return await route.pipeline.complete(call, dispatch.send)
    finally:
        _note_call(call, ctx.exchange, ctx.runtime)
        ctx.response_headers.update(call.response_headers)


async def _run_chain(
    ctx: _Answering, route: _Route, body: ChatRequest, stream: bool
) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
    """Run a chain's steps, each through its own policy (or the chain's settings for an inline prompt)."""
    assert route.chain is not None and route.policy is not None
    chain, policy = route.chain, route.policy
    sticky = _sticky_value(policy, ctx.request, body.user, body.metadata)

    async def run_step(step: ChainStep, step_body: ChatRequest, streaming: bool) -> Any:
        if step.model is None:
            assert step.pipeline is not None
            step_route = _Route(policy, route.variant, route.upstream, step.pipeline)
        else:
            callee = ctx.snapshot.config.policies[step.model]
            variant = callee.choose(sticky)
            upstream = ctx.snapshot.upstreams[variant.upstream]
            step_route = _Route(callee, variant, upstream, variant.pipeline, variant.chain)
        return await _answer(ctx, step_route, step_body, streaming)

    def observe(step: str, seconds: float) -> None:
        ctx.runtime.metrics.step_duration.child(policy.name, step).observe(seconds)

    result = await chain.run(body, stream, run_step, observe)
    if isinstance(result, dict):
        if result.get("usage"):
            result["usage"] = _chain_usage(ctx.exchange)
        return result
    return _with_chain_usage(result, ctx.exchange)


def _chain_usage(exchange: Exchange) -> dict[str, int]:
    """Usage summed over every step (and every re-ask) of a chain."""
    total = exchange.prompt_tokens + exchange.completion_tokens
    return {
        "prompt_tokens": exchange.prompt_tokens,
        "completion_tokens": exchange.completion_tokens,
        "total_tokens": total,
    }


async def _with_chain_usage(chunks: AsyncIterator[dict[str, Any]], exchange: Exchange) -> AsyncIterator[dict[str, Any]]:
    try:
        async for chunk in chunks:
            if chunk.get("usage"):
                chunk = {**chunk, "usage": _chain_usage(exchange)}
            yield chunk
    finally:
        await close_stream(chunks)


async def _chat_request(request: Request) -> tuple[_Answering, ChatRequest, _Route]:
    """Parse a chat body, resolve its model and apply rate limits: how chat and render both begin.
    Raises ``PrefitError``."""
    runtime = runtime_of(request)
    snapshot = runtime.current
    exchange = exchange_of(request.scope)
    chat = parse_chat_request(await read_body(request, snapshot.config.settings.max_body_bytes))
    route = _resolve(request, snapshot, chat.model, exchange, chat.user, chat.metadata)
    await _admit(request, snapshot, route, exchange)
    return _Answering(request, runtime, snapshot, exchange), chat, route


@endpoint
async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions``, whole or streamed, through the model's policy."""
    ctx, chat, route = await _chat_request(request)
    exchange = ctx.exchange
    exchange.stream = stream = bool(chat.stream)
    result = await _answer(ctx, route, chat, stream)
    headers = _reply_headers(exchange, ctx.response_headers)
    if isinstance(result, dict):
        if exchange.costs:
            headers["x-prefit-cost-usd"] = f"{exchange.cost_usd:.8f}"
        return Response(orjson.dumps(result), headers=headers, media_type=_JSON)
    return EventStreamResponse(_sse_events(result, exchange), headers=headers)


@endpoint
async def render(request: Request) -> Response:
    """``POST /v1/render``: the chat body in, the final upstream body out; nothing is sent upstream.

    Counted as a request of the policy and variant it rendered, with ``upstream`` and ``model``
    "none" (nothing was called); a vector-store search that cannot run fails it with the cause.
    """
    exchange_of(request.scope).calls_upstream = False
    ctx, chat, route = await _chat_request(request)  # render may embed and search: it counts as a request
    snapshot, exchange = ctx.snapshot, ctx.exchange
    sticky = _sticky_value(route.policy, request, chat.user, chat.metadata) if route.policy else None
    rendered = await render_request(
        route.policy,
        route.variant,
        chat,
        exchange.request_id,
        exchange.upstream,
        snapshot.config.policies,
        sticky,
        functools.partial(_note_store, ctx.runtime),
    )
    return Response(orjson.dumps(rendered), headers=_prefit_headers(exchange), media_type=_JSON)


async def _model_call(request: Request, path: str, *, apply_params: bool, streams: bool) -> Response:
    """Completions and embeddings: the policy picks upstream and model; the body is otherwise the client's.

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
    route = _resolve(request, snapshot, body.model, exchange)
    await _admit(request, snapshot, route, exchange)
    if route.variant is not None:
        spec = route.variant.spec
        body.model = route.variant.upstream_model
        if apply_params:
            for name, value in spec.params.items():
                if get_param(body, name) is None:
                    setattr(body, name, value)
            for name, value in spec.force.items():
                setattr(body, name, value)
    exchange.stream = bool(body.stream)
    dispatch = _dispatch(request, runtime, snapshot, route, exchange, path)
    if exchange.stream:
        chunks = await dispatch.open_stream(body)
        return EventStreamResponse(_sse_events(chunks, exchange), headers=_prefit_headers(exchange))
    reply = await dispatch.send(body)
    return Response(orjson.dumps(reply), headers=_prefit_headers(exchange), media_type=_JSON)


@endpoint
async def completions(request: Request) -> Response:
    """``POST /v1/completions`` (legacy text completions)."""
    return await _model_call(request, "/completions", apply_params=True, streams=True)


@endpoint
async def embeddings(request: Request) -> Response:
    """``POST /v1/embeddings``."""
    return await _model_call(request, "/embeddings", apply_params=False, streams=False)


def _model_entry(policy: LoadedPolicy, created: int) -> dict[str, Any]:
    primary = policy.primary
    return {
        "id": policy.name,
        "object": "model",
        "created": created,
        "owned_by": "prefit",
        "prefit": {
            "description": policy.spec.description,
            "upstream": primary.upstream,
            "upstream_model": primary.upstream_model,
            "prompt_version": primary.prompt_version,
            "prompt_hash": primary.prompt_hash or None,
            "variants": [
                {
                    "name": v.name,
                    "weight": v.weight,
                    "upstream_model": v.upstream_model,
                    "prompt_version": v.prompt_version,
                    "prompt_hash": v.prompt_hash or None,
                }
                for v in policy.variants
            ],
        },
    }


@endpoint
async def list_models(request: Request) -> Response:
    """``GET /v1/models``: every policy, then the default upstream's models (cached; its failure is not ours).

    Counted with ``policy="models"`` (and every other label "none"), not as an unresolved request.
    """
    exchange_of(request.scope).policy = "models"
    snapshot = runtime_of(request).current
    config = snapshot.config
    created = int(config.loaded_at)
    data = [_model_entry(policy, created) for policy in config.policies.values()]
    data.extend(model for model in await snapshot.catalog.models() if model["id"] not in config.policies)
    return Response(orjson.dumps({"object": "list", "data": data}), media_type=_JSON)


_FORWARDED_METHODS_WITH_BODY = {"POST", "PUT", "PATCH", "DELETE"}


@endpoint
async def passthrough(request: Request) -> Response:
    """Any other ``/v1/*`` path: sent to the default upstream as it came, the reply streamed back as it comes."""
    snapshot = runtime_of(request).current
    config = snapshot.config
    exchange = exchange_of(request.scope)
    default = config.settings.default_upstream
    if default is None:
        raise NotFound(f"No upstream serves {request.url.path} on this gateway.")
    forwarded_path = _safe_forward_path(request)
    # Read even when it is not forwarded: a consumed body is what lets a hang-up be noticed (HangupWatch).
    body = await read_body(request, config.settings.max_body_bytes)
    if request.method not in _FORWARDED_METHODS_WITH_BODY:
        body = b""
    exchange.policy, exchange.upstream, exchange.model = "passthrough", default, "other"
    if snapshot.limiter.applies(None):
        await snapshot.limiter.admit(_caller(request, snapshot), exchange.policy, None)
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


async def healthz(request: Request) -> Response:
    """``GET /healthz``: the process is up."""
    return Response(b'{"status":"ok"}', media_type=_JSON)


async def readyz(request: Request) -> Response:
    """``GET /readyz``: config loaded and clients started (503 otherwise), and the last reload's outcome.

    ``upstreams`` says of each upstream "ok" or why its calls cannot succeed (no api_key); one the
    default upstream or a policy uses makes the gateway unready, since every call to it would fail.

    An unreachable Redis makes the gateway unready only when rate limits fail closed; failing open,
    the gateway still serves correctly and taking it out of rotation would only hurt.

    Policies whose vector-store searches fail (seen at start-up, on reload or by a request, until a
    search of that collection works again) are listed under ``retrieval`` and the status says
    ``degraded``, but the answer stays 200: the store is shared by every replica (a Qdrant server)
    or it is this replica's only one (embedded), so taking the replica out of rotation would not
    bring the context back and would fail the policies that need no store. Those with
    ``on_error: skip`` (and dynamic few-shot, which falls back to its static examples) still answer,
    with ``x-prefit-context: error``; those with ``on_error: fail`` answer 502 ``retrieval_failed``
    whichever replica they reach.
    """
    runtime = runtime_of(request)
    snapshot = runtime.current
    ready = runtime.started
    status = runtime.reload_status
    body: dict[str, object] = {
        "status": "ready" if ready else "starting",
        "policies": len(snapshot.config.policies),
        "config_loaded_at": snapshot.config.loaded_at,
        "last_reload": {"ok": status.ok, "at": status.at, "errors": status.errors},
    }
    body["upstreams"] = dict(snapshot.config.upstream_status)
    if snapshot.config.unready_upstreams:
        ready = False
        body["status"] = "degraded"
    if snapshot.config.settings.redis_url:
        reachable = await snapshot.state.ping()
        body["redis"] = "ok" if reachable else "unreachable"
        if not reachable and snapshot.config.settings.rate_limits.on_backend_error == "closed":
            ready = False
            body["status"] = "degraded"
    if failing := runtime.store_health.report():
        body["retrieval"] = failing
        if runtime.started:
            body["status"] = "degraded"
    return Response(orjson.dumps(body), status_code=200 if ready else 503, media_type=_JSON)


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics`` in Prometheus' text format."""
    return Response(runtime_of(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
