"""The policy file schema: one logical model name and what the upstream model sees for it.

A policy says *what* to send (model, params, prompt, examples, output format, variants); *where*
it goes is only the name of an upstream from ``prefit.yaml``. Unknown keys are load errors. Text
fields that accept ``file:path`` hold the reference here; ``gateway.config.files`` resolves it,
relative to the policy file and never outside its folder.

The schema is split by concern (``base``, ``layers``, ``serving``, ``steps``, ``spec``); import its
names from here."""

from gateway.policy.base import MAX_STEPS, METRIC_PATTERN, MODEL_NAME_PATTERN
from gateway.policy.layers import (
    DynamicFewShotSpec,
    ExampleSpec,
    FewShotSpec,
    OutputSpec,
    PromptSpec,
    ReasoningSpec,
    RetrievalSpec,
)
from gateway.policy.serving import CacheSpec, CaptureSpec, ExperimentSpec, FallbackSpec, RateLimitSpec, ShadowSpec
from gateway.policy.spec import VARIANT_OVERRIDABLE, EvalSpec, PolicySpec, VariantSpec
from gateway.policy.steps import RouteSpec, StepSpec

__all__ = [
    "MAX_STEPS",
    "METRIC_PATTERN",
    "MODEL_NAME_PATTERN",
    "VARIANT_OVERRIDABLE",
    "CacheSpec",
    "CaptureSpec",
    "DynamicFewShotSpec",
    "EvalSpec",
    "ExampleSpec",
    "ExperimentSpec",
    "FallbackSpec",
    "FewShotSpec",
    "OutputSpec",
    "PolicySpec",
    "PromptSpec",
    "RateLimitSpec",
    "ReasoningSpec",
    "RetrievalSpec",
    "RouteSpec",
    "ShadowSpec",
    "StepSpec",
    "VariantSpec",
]
