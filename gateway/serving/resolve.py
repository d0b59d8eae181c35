"""Which policy variant (or passthrough) answers a request, and whether it may be admitted now.

Resolution writes the request's facts (policy, variant, prompt version, upstream, model) on its
``Exchange`` once; everything later reads them there. Chain steps resolve through ``step_target``,
which serving and ``/v1/render`` share."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from gateway.config.load import LoadedPolicy, LoadedVariant
from gateway.engine.chain import Chain, ChainStep
from gateway.engine.pipeline import Pipeline
from gateway.engine.record import Exchange
from gateway.errors import (
    ModelNotFound,
    PermissionDenied,
)
from gateway.serving.auth import bearer_token, is_local
from gateway.serving.runtime import Snapshot
from gateway.state.feedback import Answered, FeedbackStore
from gateway.upstream.base import Upstream

__all__ = [
    "PASSTHROUGH",
    "PIN_HEADER",
    "Route",
    "StepTarget",
    "admit",
    "caller",
    "pinned_variant",
    "resolve",
    "step_target",
    "sticky_value",
    "trusted",
]


PASSTHROUGH = Pipeline(())

PIN_HEADER = "x-prefit-variant"


class Route:
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


@dataclass(frozen=True, slots=True)
class StepTarget:
    """Who answers one step of a chain, and with which layers (and, for a chain step, its own chain)."""

    policy: LoadedPolicy
    variant: LoadedVariant
    pipeline: Pipeline
    chain: Chain | None
    upstream: str


def step_target(
    step: ChainStep,
    policy: LoadedPolicy,
    variant: LoadedVariant,
    policies: Mapping[str, LoadedPolicy],
    sticky: str | None,
) -> StepTarget:
    """An inline-prompt step runs on the chain's own variant; a step naming a model runs on that
    policy's variant for this caller. Serving and ``/v1/render`` both ask here, so they agree."""
    if step.model is None:
        assert step.pipeline is not None
        return StepTarget(policy, variant, step.pipeline, None, variant.upstream)
    callee = policies[step.model]
    chosen = callee.choose(sticky)
    return StepTarget(callee, chosen, chosen.pipeline, chosen.chain, chosen.upstream)


def sticky_value(
    policy: LoadedPolicy, request: Request, user: str | None, metadata: dict[str, Any] | None
) -> str | None:
    key = policy.spec.sticky_key
    if key == "user":
        return user
    if key.startswith("header:"):
        return request.headers.get(key[7:])
    value = (metadata or {}).get(key[9:])
    return value if isinstance(value, str) else None


def pinned_variant(request: Request, snapshot: Snapshot) -> str | None:
    """A variant the caller pins with ``x-prefit-variant``; only admins (or, with no admin keys, loopback)."""
    pinned = request.headers.get(PIN_HEADER)
    if pinned is None:
        return None
    if not trusted(request, snapshot):
        raise PermissionDenied(f"Pinning a variant with {PIN_HEADER} needs an admin key.")
    return pinned


def trusted(request: Request, snapshot: Snapshot) -> bool:
    """An admin caller (or, with no admin keys, a loopback one): may pin variants and see chain steps."""
    return snapshot.admin_keys.allows(bearer_token(request.scope)) if snapshot.admin_keys else is_local(request.scope)


def resolve(
    request: Request,
    snapshot: Snapshot,
    model: str,
    exchange: Exchange,
    user: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Route:
    """Find the policy variant for ``model``, else the default upstream. Raises ``ModelNotFound``."""
    config = snapshot.config
    policy = config.policies.get(model)
    if policy is not None:
        pinned = pinned_variant(request, snapshot)
        variant = policy.select(pinned, sticky_value(policy, request, user, metadata))
        exchange.pinned = pinned is not None
        exchange.policy = policy.name
        exchange.variant = variant.name
        exchange.prompt_version = variant.prompt_version
        exchange.upstream = variant.upstream
        exchange.model = variant.upstream_model
        _remember(snapshot.feedback, exchange)
        return Route(policy, variant, snapshot.upstreams[variant.upstream], variant.pipeline, variant.chain)
    default = config.settings.default_upstream
    if default is None:
        raise ModelNotFound(f"The model '{model}' does not exist or you do not have access to it.", param="model")
    exchange.policy = "passthrough"
    exchange.upstream = default
    exchange.model = model if snapshot.catalog.knows(model) else "other"
    _remember(snapshot.feedback, exchange)
    return Route(None, None, snapshot.upstreams[default], PASSTHROUGH)


def _remember(store: FeedbackStore, exchange: Exchange) -> None:
    """Note who answers this request, so ``/v1/feedback`` can find it later. Written now, in the
    background while the upstream works, so it is stored before a quick client can send feedback."""
    if exchange.calls_upstream:
        store.remember(exchange.request_id, Answered(exchange.policy, exchange.variant))


def caller(request: Request, snapshot: Snapshot) -> str:
    """Who is asking, for rate limits: the gateway key (hashed), else the client's address."""
    token = bearer_token(request.scope)
    if snapshot.gateway_keys and token:
        return "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return "addr:" + (request.client.host if request.client else "unknown")


async def admit(request: Request, snapshot: Snapshot, route: Route, exchange: Exchange) -> None:
    """Apply rate limits now and count the tokens once the answer is in. Raises ``RateLimited``."""
    limits = route.variant.spec.rate_limit if route.variant is not None else None
    if not snapshot.limiter.applies(limits):
        return
    who = caller(request, snapshot)
    await snapshot.limiter.admit(who, exchange.policy, limits)
    limiter = snapshot.limiter

    def count_tokens(done: Exchange) -> None:
        limiter.record_tokens(who, done.policy, limits, done.prompt_tokens + done.completion_tokens)

    exchange.on_done.append(count_tokens)
