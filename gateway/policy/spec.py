"""The whole policy file: the parts, its variants and its held-out evaluation."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.errors import unknown_key
from gateway.policy.base import (
    _NAME_PATTERN,
    MAX_STEPS,
    METRIC_PATTERN,
    MODEL_NAME_PATTERN,
    _check_param_names,
    _Spec,
)
from gateway.policy.layers import (
    FewShotSpec,
    OutputSpec,
    PromptSpec,
    RetrievalSpec,
)
from gateway.policy.serving import CacheSpec, CaptureSpec, ExperimentSpec, FallbackSpec, RateLimitSpec, ShadowSpec
from gateway.policy.steps import StepSpec


class EvalSpec(_Spec):
    """How `prefit eval` measures this policy on a held-out set."""

    dataset: str = Field(
        pattern=r"^file:.+", description="`file:path` to a JSONL file of {input, expected, metadata?} records."
    )
    metrics: list[str | dict[str, Any]] = Field(
        default_factory=lambda: list[str | dict[str, Any]](["exact_match"]),
        description="Scorers: exact_match, contains, regex, json_valid, {json_field: <path>}, {regex: <pattern>}, "
        "{python: 'module:function'}, {judge: {model: POLICY, pass: '>=4'}} (a policy grades each answer with "
        "a number). The first is the primary score.",
    )
    gates: dict[str, str] = Field(
        default_factory=dict,
        description="Score thresholds per metric, e.g. `{exact_match: '>=0.85'}`; "
        "`prefit eval` exits 1 when one is missed.",
    )
    concurrency: int = Field(default=4, ge=1, le=64, description="Requests in flight at once.")

    @field_validator("gates")
    @classmethod
    def _gate_forms(cls, value: dict[str, str]) -> dict[str, str]:
        for name, gate in value.items():
            if not re.fullmatch(r"\s*(>=|<=|>|<|==)\s*-?[0-9]*\.?[0-9]+\s*", str(gate)):
                raise ValueError(f"gate {name!r} must look like '>=0.85' (got {gate!r})")
        return value


class VariantSpec(BaseModel):
    """One A/B arm: a name, a weight, and fields that override the policy (deep-merged)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(pattern=_NAME_PATTERN, description="Reported in headers and metrics.")
    weight: float = Field(ge=0, description="Relative share of traffic.")

    @model_validator(mode="after")
    def _only_overridable(self) -> VariantSpec:
        for key in self.model_extra or {}:
            if key not in PolicySpec.model_fields:
                raise ValueError(f"{key!r}: {unknown_key(key, sorted(VARIANT_OVERRIDABLE))}")
            if key not in VARIANT_OVERRIDABLE:
                raise ValueError(f"{key!r} cannot be overridden by a variant")
        return self

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PolicySpec(_Spec):
    """A policy file, ``policies/<name>.yaml``."""

    model: str | None = Field(
        default=None,
        pattern=MODEL_NAME_PATTERN,
        description="The model name clients send; defaults to the file name without extension.",
        examples=["support-bot"],
    )
    description: str | None = Field(default=None, description="What this policy is for, shown in /v1/models.")
    upstream: str | None = Field(
        default=None,
        description="Name of an upstream in prefit.yaml; defaults to default_upstream.",
        examples=["openai"],
    )
    upstream_model: str | None = Field(
        default=None,
        description="The model the upstream is asked for; defaults to the policy's model name.",
        examples=["gpt-4o-mini"],
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Default request parameters; a value the client sends wins.",
        examples=[{"temperature": 0}],
    )
    force: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters the policy always sets, whatever the client sends.",
        examples=[{"temperature": 0}],
    )
    max_tokens_cap: int | None = Field(
        default=None, ge=1, description="Upper bound on max_tokens / max_completion_tokens (set when absent)."
    )
    prompt: PromptSpec | None = Field(default=None, description="Versioned system prompt.")
    few_shot: FewShotSpec | None = Field(default=None, description="Few-shot examples.")
    retrieval: RetrievalSpec | None = Field(default=None, description="Context from a vector store.")
    output: OutputSpec | None = Field(default=None, description="Required output format.")
    cache: CacheSpec = Field(default_factory=CacheSpec, description="Exact response caching.")
    rate_limit: RateLimitSpec | None = Field(default=None, description="Limits for this policy across all callers.")
    fallbacks: list[FallbackSpec] = Field(
        default_factory=list,
        description="Tried in order when the upstream fails after its retries or its circuit is open.",
    )
    steps: list[StepSpec] = Field(
        default_factory=list,
        description="A chain of small steps answered as this one model; the last step's "
        "answer is returned (streamed when the client streams).",
    )
    eval: EvalSpec | None = Field(default=None, description="Held-out evaluation for `prefit eval`.")
    variants: list[VariantSpec] = Field(default_factory=list, description="Weighted A/B variants.")
    feedback_metrics: list[str] | None = Field(
        default=None,
        description="Feedback metrics this policy accepts; unset: any identifier, up to settings "
        "`feedback.max_metrics` names.",
    )
    experiment: ExperimentSpec | None = Field(default=None, description="Variant weights adapted to feedback.")
    shadow: ShadowSpec | None = Field(default=None, description="Copies of requests answered by another variant.")
    capture: CaptureSpec | None = Field(default=None, description="Sampled traffic kept as candidate eval items.")
    sticky_key: str = Field(
        default="user",
        pattern=r"^(user|header:[A-Za-z0-9-]{1,64}|metadata:[A-Za-z_][A-Za-z0-9_]{0,63})$",
        description="What keeps a caller on one variant: the request's `user`, `header:<name>` or `metadata:<key>`.",
    )

    @field_validator("params", "force")
    @classmethod
    def _param_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_param_names(value)

    @field_validator("variants")
    @classmethod
    def _variants(cls, value: list[VariantSpec]) -> list[VariantSpec]:
        if not value:
            return value
        names = [variant.name for variant in value]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"variant names must be unique: {', '.join(duplicates)}")
        if sum(variant.weight for variant in value) <= 0:
            raise ValueError("variant weights must not all be 0")
        return value

    @field_validator("feedback_metrics")
    @classmethod
    def _metric_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not re.fullmatch(METRIC_PATTERN, name):
                raise ValueError(f"{name!r} is not a metric name (lowercase letters, digits, _; at most 40)")
        return value

    @model_validator(mode="after")
    def _experiment_and_shadow_fit(self) -> PolicySpec:
        names = [variant.name for variant in self.variants]
        if self.experiment is not None and len(names) < 2:
            raise ValueError("experiment needs at least two variants")
        if self.experiment is not None and self.experiment.floor * len(names) >= 1:
            raise ValueError("experiment floor times the number of variants must stay below 1")
        metrics = self.feedback_metrics
        if self.experiment is not None and metrics is not None and self.experiment.metric not in metrics:
            raise ValueError(f"experiment metric {self.experiment.metric!r} is not in feedback_metrics")
        if self.shadow is not None and self.shadow.variant not in names:
            raise ValueError(f"shadow variant {self.shadow.variant!r} is not one of the variants")
        return self

    @field_validator("steps")
    @classmethod
    def _step_names(cls, value: list[StepSpec]) -> list[StepSpec]:
        names = [step.name for step in value]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"step names must be unique: {', '.join(duplicates)}")
        if len(value) > MAX_STEPS:
            raise ValueError(f"a chain has at most {MAX_STEPS} steps")
        return value


#: Fields a variant may override; identity and routing keys stay the policy's own.
VARIANT_OVERRIDABLE = frozenset(
    {
        "upstream",
        "upstream_model",
        "params",
        "force",
        "max_tokens_cap",
        "prompt",
        "few_shot",
        "output",
        "description",
        "cache",
        "fallbacks",
        "steps",
        "retrieval",
    }
)
