"""The policy file schema: one logical model name and what the upstream model sees for it.

A policy says *what* to send (model, params, prompt, examples, output format, variants); *where*
it goes is only the name of an upstream from ``prefit.yaml``. Unknown keys are load errors. Text
fields that accept ``file:path`` hold the reference here; ``gateway.config.files`` resolves it,
relative to the policy file and never outside its folder.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.errors import unknown_key

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

MAX_STEPS = 16
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$"
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_STRUCTURAL_PARAMS = {"model", "messages", "stream"}
_METADATA_KEY = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
#: Feedback metric names: short identifiers, so they are safe as metric labels.
METRIC_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_param_names(value: dict[str, Any]) -> dict[str, Any]:
    clash = sorted(_STRUCTURAL_PARAMS & value.keys())
    if clash:
        raise ValueError(f"{', '.join(clash)} cannot be set as a parameter")
    for name in value:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"{name!r} is not a request parameter name")
    return value


class ReasoningSpec(_Spec):
    """Chain-of-thought: ask for reasoning first, then give the client only the extracted answer."""

    instruction: str = Field(
        default=(
            "Think through the problem step by step first. Then write the final answer on its own line, "
            "starting with 'Answer:'."
        ),
        description="Appended to the system prompt.",
    )
    answer_pattern: str = Field(
        default=r"(?is)answer:\s*((?:(?!answer:).)+?)\s*$",
        description="Regular expression whose first group (or whole match) is the answer the client receives.",
    )
    on_no_answer: Literal["full", "error"] = Field(
        default="full", description="When the pattern finds nothing: return the whole text, or a 502."
    )

    @field_validator("answer_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class PromptSpec(_Spec):
    """The versioned system prompt."""

    version: str | None = Field(
        default=None, pattern=_NAME_PATTERN, description="Reported in headers and metrics.", examples=["v3"]
    )
    system: str | None = Field(
        default=None,
        description="Jinja2 template (sandboxed), inline or `file:path` relative to the policy file.",
        examples=["file:prompts/support-bot/v3.md"],
    )
    vars: dict[str, Any] = Field(default_factory=dict, description="Template variables, each a top-level name.")
    metadata: list[str] = Field(
        default_factory=list,
        description="Request `metadata` keys templates may read as `metadata.<key>` (whitelist; others are dropped).",
    )
    client_system: Literal["append", "replace", "reject"] = Field(
        default="append",
        description="A client's own system messages: kept after the policy's, dropped, or refused with 400.",
    )
    reasoning: ReasoningSpec | None = Field(default=None, description="Ask for reasoning, return only the answer.")

    @field_validator("metadata")
    @classmethod
    def _metadata_keys(cls, value: list[str]) -> list[str]:
        for key in value:
            if not re.fullmatch(_METADATA_KEY, key):
                raise ValueError(f"{key!r} is not a usable metadata key")
        return value

    @field_validator("vars")
    @classmethod
    def _var_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not a usable template variable name")
            if name in ("metadata", "steps"):
                raise ValueError(f"{name!r} is reserved for request data")
        return value


class ExampleSpec(_Spec):
    """One labelled example: a user input and the answer the model should give."""

    input: str | list[dict[str, Any]] = Field(description="The user's text, or a list of chat messages.")
    output: str | dict[str, Any] | list[Any] = Field(description="The answer; JSON values are sent as compact JSON.")


class DynamicFewShotSpec(_Spec):
    """Pick the labelled examples most similar to the request from a collection (`prefit ingest` JSONL)."""

    collection: str = Field(description="Collection of `{input, output}` examples.")
    k: int = Field(default=3, ge=1, le=20, description="How many examples to inject.")
    min_score: float | None = Field(default=None, ge=-1, le=1, description="Ignore examples less similar than this.")


class FewShotSpec(_Spec):
    """Examples injected as user/assistant turns after the system prompt."""

    examples: str | list[ExampleSpec] = Field(
        default_factory=list,
        description="Inline examples, or `file:path` to a JSONL file of {input, output} records.",
        examples=["file:examples/support.jsonl"],
    )
    max_examples: int | None = Field(default=None, ge=1, le=100, description="Inject at most this many.")
    dynamic: DynamicFewShotSpec | None = Field(
        default=None,
        description="Retrieved examples, most similar first; the static ones fill in when none match, or when "
        "the store fails (`x-prefit-context: error`, counted in `prefit_retrieval_errors_total`).",
    )


class RetrievalSpec(_Spec):
    """Context from a vector store, inserted as quoted, numbered sources before the user's question."""

    collection: str = Field(description="The collection `prefit ingest` filled.", examples=["returns-policy"])
    top_k: int = Field(default=4, ge=1, le=50, description="Passages to retrieve.")
    min_score: float | None = Field(default=None, ge=-1, le=1, description="Drop passages less similar than this.")
    max_context_chars: int = Field(default=6000, ge=100, description="Budget for inserted passage text.")
    on_error: Literal["skip", "fail"] = Field(
        default="skip",
        description="When the store or model fails: answer without context (`x-prefit-context: error`, counted "
        "in `prefit_retrieval_errors_total`), or fail (502). Render always fails.",
    )
    query: Literal["last_user", "all_user"] = Field(
        default="last_user", description="What is embedded: the last user message, or every user message."
    )
    mode: Literal["dense", "hybrid"] = Field(
        default="hybrid",
        description="`hybrid`: dense and BM25 keyword candidates fused by reciprocal rank (finds exact codes and "
        "part numbers too); `dense`: embedding similarity only. A collection ingested before hybrid search "
        "is searched dense either way.",
    )
    filter: dict[str, str] = Field(
        default_factory=dict,
        description="Payload field -> request `metadata` key: only passages whose field equals that value.",
        examples=[{"product_line": "line"}],
    )
    template: str | None = Field(
        default=None,
        description="Jinja2 template for the sources message over `passages` (number, id, score, text, source, "
        "heading); default: numbered, delimited, marked as quoted material.",
    )


class OutputSpec(_Spec):
    """An output format the answer must satisfy, checked before the client sees it."""

    json_schema: str | dict[str, Any] = Field(
        description="A JSON Schema, inline or `file:path`.", examples=["file:schemas/ticket.json"]
    )
    mode: Literal["auto", "response_format", "instructions"] = Field(
        default="auto",
        description="How the format is asked for: `response_format` (strict JSON schema), instructions in the "
        "system prompt, or `auto` (response_format where the upstream supports it).",
    )
    name: str = Field(default="output", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The schema's name upstream.")
    max_retries: int = Field(default=2, ge=0, le=5, description="Re-asks with the validation error when invalid.")
    strict: bool = Field(default=True, description="Ask the upstream for strict schema adherence (response_format).")
    on_invalid: Literal["return", "error"] = Field(
        default="return",
        description="Still invalid after retries: return it with `x-prefit-output-valid: false`, or a 502.",
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


class RouteSpec(_Spec):
    """A step whose policy is chosen per request: the value of ``on`` picks one of ``cases``."""

    on: str = Field(
        description="A Jinja2 template over `input` and `steps`; its rendered text (trimmed) is looked up in `cases`.",
        examples=["{{ steps.classify.output }}"],
    )
    cases: dict[str, str] = Field(
        min_length=1, description="Value -> the policy (model name) that answers this step and the chain's rest."
    )
    default: str | None = Field(
        default=None, description="The policy for a value with no case; without it such a value fails the request."
    )

    @model_validator(mode="before")
    @classmethod
    def _on_key(cls, data: Any) -> Any:
        """YAML 1.1 reads a bare ``on`` key as the boolean true (a key ``True``); here it means ``on``."""
        if isinstance(data, dict) and "on" not in data:
            return {("on" if key in (True, "True") else key): value for key, value in data.items()}
        return data


class StepSpec(_Spec):
    """One link of a chain: another policy, a routed policy, or an inline prompt, fed by a template."""

    name: str = Field(pattern=_NAME_PATTERN, description="Referred to as `steps.<name>` by later steps.")
    model: str | None = Field(default=None, description="A policy (model name) this step calls.")
    system: str | None = Field(
        default=None,
        description="Instead of `model`: an inline system prompt (Jinja2), sent with the chain's own "
        "upstream, upstream_model and params.",
    )
    input: str | None = Field(
        default=None,
        description="The step's user message, a Jinja2 template over `input` (the request's last user message), "
        "`steps.<name>.output` (text) and `steps.<name>.json` (parsed JSON, if any). Default: the original messages.",
        examples=["{{ steps.extract.output }}"],
    )
    for_each: str | None = Field(
        default=None,
        description="A Jinja2 template naming a list from an earlier step's JSON: the step runs once per "
        "element (`item` in its templates); its `json` is the list of results, its `output` their texts, "
        "one per line.",
        examples=["{{ steps.extract.json.entities }}"],
    )
    concurrency: int = Field(
        default=4, ge=1, le=64, description="With `for_each`: how many elements are answered at once."
    )
    route: RouteSpec | None = Field(
        default=None,
        description="Instead of `model` or `system`: pick the policy per request from an earlier step's value; "
        "`steps.<name>.routed` names the one picked.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> StepSpec:
        if sum(target is not None for target in (self.model, self.system, self.route)) != 1:
            raise ValueError("a step needs exactly one of `model`, `system` or `route`")
        if self.for_each is not None and self.route is not None:
            raise ValueError("a step cannot both `route` and run `for_each`")
        return self


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
