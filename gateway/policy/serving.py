"""How a policy is served beyond its layers: cache, rate limits, fallbacks, experiments, shadow, capture."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.policy.base import (
    _NAME_PATTERN,
    METRIC_PATTERN,
    _Spec,
)


class CacheSpec(_Spec):
    """Whether this policy's answers come from the exact response cache."""

    mode: Literal["auto", "always", "never"] = Field(
        default="auto", description="`auto`: only deterministic requests (temperature 0); `always`; `never`."
    )
    ttl_s: float | None = Field(default=None, gt=0, description="Overrides the settings' cache TTL.")


class RateLimitSpec(_Spec):
    """Requests and tokens per minute for this policy, across all callers."""

    requests_per_minute: int | None = Field(default=None, ge=1, description="Requests per minute.")
    tokens_per_minute: int | None = Field(default=None, ge=1, description="Prompt plus completion tokens per minute.")


class FallbackSpec(_Spec):
    """Another upstream and model to try when the policy's own cannot answer."""

    upstream: str = Field(description="An upstream from prefit.yaml.")
    upstream_model: str = Field(description="The model to ask there.")


class ExperimentSpec(_Spec):
    """Adaptive variant weights: Beta-Bernoulli Thompson sampling over one feedback metric."""

    metric: str = Field(pattern=METRIC_PATTERN, description="The feedback metric that counts as success.")
    method: Literal["thompson"] = Field(default="thompson", description="How weights adapt.")
    min_samples: int = Field(
        default=100, ge=1, description="Feedback each arm needs before weights adapt and a winner can be decided."
    )
    floor: float = Field(default=0.05, ge=0, lt=0.5, description="Least share of traffic every arm keeps.")
    threshold: float | None = Field(
        default=None, description="For numeric feedback: a value at or above it is a success (booleans need none)."
    )


class ShadowSpec(_Spec):
    """A sampled copy of requests answered by another variant in the background, for comparison."""

    variant: str = Field(pattern=_NAME_PATTERN, description="The variant that answers the copies.")
    sample: float = Field(default=0.1, gt=0, le=1, description="Share of requests copied.")


class CaptureSpec(_Spec):
    """Sampled production inputs and outputs written as candidate eval items (prompt text is stored)."""

    sample: float = Field(default=0.01, gt=0, le=1, description="Share of requests captured.")
    to: str = Field(
        pattern=r"^file:.+\.jsonl$",
        description="JSONL file the items are appended to, relative to the settings file.",
        examples=["file:captures/support-bot.jsonl"],
    )
