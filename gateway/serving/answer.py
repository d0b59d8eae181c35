"""One chat request answered: a policy's layers around the upstream call, or a chain's steps.

This is where serving hands over to the engine: it builds the ``Call`` the layers edit and the
``Dispatch`` that reaches the upstream (cache, retries, fallbacks), and folds what the layers
reported into the request's metrics."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from gateway.engine.chain import ChainStep, StepOutput
from gateway.engine.dispatch import Dispatch
from gateway.engine.pipeline import OpenStream, SendWhole
from gateway.engine.record import Exchange
from gateway.engine.resilience import Target
from gateway.errors import PermissionDenied, StepFailed
from gateway.serving.http import prefit_headers
from gateway.serving.resolve import Route, step_target, sticky_value, trusted
from gateway.serving.runtime import Runtime, Snapshot
from gateway.serving.spans import step_attributes, traced_upstream
from gateway.upstream.base import Upstream
from gateway.wire import ChatRequest
from middleware.base import Call, StoreUse, close_stream

__all__ = [
    "STEPS_HEADER",
    "Answering",
    "CallReport",
    "UpstreamView",
    "answer",
    "dispatch_for",
    "new_call",
    "reply_headers",
    "run_chain",
]


#: A trusted caller sending ``x-prefit-steps: include`` gets every step's output in ``prefit_steps``.
STEPS_HEADER = "x-prefit-steps"

#: A rough, tokenizer-free estimate for ``prefit_tokens_total{kind="injected"}``.
_CHARS_PER_TOKEN = 4


class CallReport:
    """Implements ``middleware.base.CallObserver`` for one call: what its layers report goes straight
    to the metrics, the request's record and the store-health list (which logs and feeds ``/readyz``)."""

    __slots__ = ("_chars", "_exchange", "_policy", "_runtime")

    def __init__(self, policy: str, exchange: Exchange, runtime: Runtime) -> None:
        self._policy = policy
        self._exchange = exchange
        self._runtime = runtime
        self._chars = 0

    def stage(self, stage: str, seconds: float) -> None:
        self._runtime.metrics.observe_stage(stage, seconds)
        if self._runtime.tracing is not None:
            self._runtime.tracing.stage(stage, seconds)

    def injected(self, chars: int) -> None:
        self._chars += chars

    def validated(self, result: str) -> None:
        self._runtime.metrics.output_validation.child(self._policy, result).inc()

    def retrieved(self, hits: int) -> None:
        self._runtime.metrics.retrieval_hits.child(self._policy).observe(hits)

    def searched(self, use: StoreUse) -> None:
        self._runtime.store_health.observe_one(self._policy, use)

    def finish(self) -> None:
        """Injected text as tokens, once per call (a rough, tokenizer-free estimate)."""
        self._exchange.injected_tokens += math.ceil(self._chars / _CHARS_PER_TOKEN)


def new_call(route: Route, chat: ChatRequest, exchange: Exchange, runtime: Runtime) -> tuple[Call, CallReport]:
    """The ``Call`` the layers edit, with the request's facts as resolution wrote them, and its report."""
    policy, variant = route.policy, route.variant
    name = policy.name if policy is not None else exchange.policy
    report = CallReport(name, exchange, runtime)
    call = Call(
        request_id=exchange.request_id,
        body=chat,
        policy=name,
        variant=variant.name if variant is not None else exchange.variant,
        prompt_version=variant.prompt_version if variant is not None else exchange.prompt_version,
        upstream=route.upstream.name,
        stream=bool(chat.stream),
        observer=report,
    )
    return call, report


UpstreamView = Callable[[Upstream], Upstream]


def dispatch_for(
    request: Request,
    runtime: Runtime,
    snapshot: Snapshot,
    route: Route,
    exchange: Exchange,
    path: str,
    view: UpstreamView | None = None,
) -> Dispatch:
    """How this request reaches its upstream and fallbacks; ``view`` changes how each is called (the
    Responses API's native or translated calls)."""
    targets = [Target(route.upstream, None)]
    spec = route.variant.spec if route.variant is not None else None
    if spec is not None:
        targets += [Target(snapshot.upstreams[f.upstream], f.upstream_model) for f in spec.fallbacks]
    if view is not None:
        targets = [Target(view(target.upstream), target.model) for target in targets]
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


def reply_headers(exchange: Exchange, call_headers: dict[str, str]) -> dict[str, str]:
    headers = {**prefit_headers(exchange), **call_headers}
    if exchange.cache is not None:
        headers["x-prefit-cache"] = exchange.cache
    return headers


@dataclass(slots=True)
class Answering:
    """What every step of one chat request shares: where it came from, what serves it, what it did."""

    request: Request
    runtime: Runtime
    snapshot: Snapshot
    exchange: Exchange
    response_headers: dict[str, str] = field(default_factory=dict)
    view: UpstreamView | None = None


async def answer(
    ctx: Answering, route: Route, body: ChatRequest, stream: bool
) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
    """One policy variant (or passthrough) answers ``body``: a chain runs its steps, anything else its layers."""
    if route.chain is not None:
        return await run_chain(ctx, route, body, stream)
    call, report = new_call(route, body, ctx.exchange, ctx.runtime)
    call.stream = stream
    dispatch = dispatch_for(ctx.request, ctx.runtime, ctx.snapshot, route, ctx.exchange, "/chat/completions", ctx.view)
    send: SendWhole = dispatch.send
    open_stream: OpenStream = dispatch.open_stream
    if ctx.runtime.tracing is not None:
        upstream = ctx.snapshot.config.settings.upstreams.get(route.upstream.name)
        provider = upstream.kind if upstream is not None else "openai"
        send, open_stream = traced_upstream(ctx.runtime.tracing, route, provider, send, open_stream)
    try:
        if stream:
            return await route.pipeline.stream(call, open_stream, send)
        return await route.pipeline.complete(call, send)
    finally:
        report.finish()
        ctx.response_headers.update(call.response_headers)


async def run_chain(
    ctx: Answering, route: Route, body: ChatRequest, stream: bool
) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
    """Run a chain's steps, each through its own policy (or the chain's settings for an inline prompt)."""
    assert route.chain is not None and route.policy is not None
    chain, policy = route.chain, route.policy
    sticky = sticky_value(policy, ctx.request, body.user, body.metadata)

    assert route.variant is not None
    variant, policies, upstreams = route.variant, ctx.snapshot.config.policies, ctx.snapshot.upstreams

    async def run_step(step: ChainStep, step_body: ChatRequest, streaming: bool) -> Any:
        target = step_target(step, policy, variant, policies, sticky)
        upstream = route.upstream if step.model is None else upstreams[target.upstream]
        step_route = Route(target.policy, target.variant, upstream, target.pipeline, target.chain)
        if ctx.runtime.tracing is None:
            return await answer(ctx, step_route, step_body, streaming)
        attributes = step_attributes(policy.name, step.name, target.policy.name, target.variant)
        return await ctx.runtime.tracing.around(
            f"step {step.name}", attributes, lambda: answer(ctx, step_route, step_body, streaming)
        )

    def observe(step: str, seconds: float) -> None:
        ctx.runtime.metrics.step_duration.child(policy.name, step).observe(seconds)

    outputs: dict[str, StepOutput] = {}
    show_steps = _shows_steps(ctx)
    try:
        result = await chain.run(body, stream, run_step, observe, outputs)
    except StepFailed as exc:
        if show_steps:  # where the chain broke is what the caller asked to see
            exc.steps = {name: _shown_step(out) for name, out in outputs.items()}
        raise
    if isinstance(result, dict):
        if result.get("usage"):
            result["usage"] = _chain_usage(ctx.exchange)
        if show_steps:
            result["prefit_steps"] = {name: _shown_step(out) for name, out in outputs.items()}
        return result
    return _with_chain_usage(result, ctx.exchange)


def _shows_steps(ctx: Answering) -> bool:
    if ctx.request.headers.get(STEPS_HEADER) != "include":
        return False
    if not trusted(ctx.request, ctx.snapshot):
        raise PermissionDenied(f"Seeing chain steps with {STEPS_HEADER} needs an admin key.")
    return True


def _shown_step(out: StepOutput) -> dict[str, Any]:
    shown: dict[str, Any] = {"output": out.output, "json": out.json}
    if out.routed is not None:
        shown["routed"] = out.routed
    return shown


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
