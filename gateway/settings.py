"""The gateway settings schema (``prefit.yaml``) and its built-in defaults.

Every field carries a description: ``prefit schema`` and ``docs/`` are generated from it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = [
    "DEFAULT_SETTINGS_YAML",
    "CacheSettings",
    "EmbeddingSettings",
    "FeedbackSettings",
    "GatewayKey",
    "Limits",
    "Price",
    "QdrantSettings",
    "RateLimitSettings",
    "RedisSettings",
    "ResilienceSettings",
    "Settings",
    "TracingSettings",
    "UpstreamSettings",
    "is_loopback_host",
]

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_RESERVED_HEADERS = {"authorization", "host", "content-length", "transfer-encoding", "connection"}


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address: reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _key_form(key: SecretStr) -> SecretStr:
    secret = key.get_secret_value()
    if not secret:
        raise ValueError("a key must not be empty")
    if secret.startswith("sha256:") and not re.fullmatch(r"sha256:[0-9a-fA-F]{64}", secret):
        raise ValueError("a hashed key must be 'sha256:' followed by 64 hex digits")
    return key


#: A gateway key as configured: the key itself, or ``sha256:<hex digest>`` of it.
GatewayKey = Annotated[SecretStr, AfterValidator(_key_form)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamSettings(_Strict):
    """One model provider that policies may name. Clients can never choose a URL themselves."""

    kind: Literal["openai", "anthropic"] = Field(
        default="openai",
        description="Which API the upstream speaks: `openai` for OpenAI-compatible servers (OpenAI, vLLM, "
        "llama.cpp, Ollama, TEI); `anthropic` for Anthropic's native Messages API, translated to and from "
        "chat completions (passthrough of other paths needs an `openai` default upstream).",
    )
    base_url: str = Field(
        description="For `openai`: the OpenAI-compatible base URL, including /v1. For `anthropic`: the API's "
        "root, without /v1.",
        examples=["https://api.openai.com/v1", "https://api.anthropic.com"],
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="Sent as `Authorization: Bearer ...` (`anthropic`: as `x-api-key`); never logged or returned.",
    )
    anthropic_version: str = Field(
        default="2023-06-01", description="`kind: anthropic` only: the `anthropic-version` header sent on every call."
    )
    requires_api_key: bool | None = Field(
        default=None,
        description="Whether calls need `api_key`; null: yes, unless base_url is on loopback (a local "
        "llama.cpp or vLLM). While a needed key is missing, /readyz answers 503. Set false for a keyless "
        "server on another host, or one authenticated by `headers`.",
    )
    timeout_s: float = Field(
        default=60.0, gt=0, description="Deadline for a whole non-streamed answer, or for a stream's first chunk."
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, description="Deadline for opening a connection.")
    read_timeout_s: float | None = Field(
        default=None, gt=0, description="Longest silence allowed between two reads; defaults to timeout_s."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers sent on every upstream call.")
    max_connections: int = Field(default=256, ge=1, description="Size of this upstream's connection pool.")
    supports_json_schema: bool = Field(
        default=True,
        description="Whether the upstream honours `response_format: json_schema`; if not, output formats are "
        "asked for in the system prompt.",
    )
    responses_api: Literal["native", "translate"] = Field(
        default="native",
        description="How `/v1/responses` requests reach this upstream: `native` sends a Responses body to its "
        "`/responses`; `translate` sends chat completions and turns the answer back into a Responses object or "
        "event stream (for vLLM, llama.cpp, Ollama). On `translate`, requests that need stored responses "
        "(`previous_response_id`, `conversation`, `store: true`) are refused with a 400.",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None or not value.get_secret_value() else value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"{name!r} is set by the gateway and cannot be configured")
        return value

    @property
    def read_timeout(self) -> float:
        return self.read_timeout_s or self.timeout_s

    @property
    def needs_api_key(self) -> bool:
        if self.requires_api_key is not None:
            return self.requires_api_key
        return not is_loopback_host(urlsplit(self.base_url).hostname or "")


class QdrantSettings(_Strict):
    """Where vectors live: embedded on disk (``path``) or a Qdrant server (``url``)."""

    path: str | None = Field(default=".prefit/qdrant", description="Embedded Qdrant storage directory.")
    url: str | None = Field(default=None, description="Qdrant server URL; takes precedence over path.")
    api_key: SecretStr | None = Field(default=None, description="Qdrant server API key.")


class EmbeddingSettings(_Strict):
    """The embedding model used by retrieval, dynamic few-shot and ``prefit ingest``."""

    model_dir: str | None = Field(
        default=None, description="Any ONNX sentence-embedding folder; default: the bundled all-MiniLM-L6-v2."
    )
    cache_dir: str | None = Field(
        default=None, description="Where the bundled model is assembled: default $PREFIT_MODEL_DIR or .prefit/models."
    )
    max_concurrency: int = Field(default=1, ge=1, le=16, description="Embedding calls run at once (threads).")
    upstream: str | None = Field(
        default=None,
        description="Embed queries and ingested chunks through this upstream's `/v1/embeddings` (a TEI or vLLM "
        "embedding server, or OpenAI) instead of the in-process model. A collection remembers which embedder "
        "made it and refuses another.",
        examples=["embedder"],
    )
    model: str | None = Field(
        default=None,
        description="The embedding model to ask `upstream` for (required with `upstream`).",
        examples=["text-embedding-3-small"],
    )

    @model_validator(mode="after")
    def _model_with_upstream(self) -> EmbeddingSettings:
        if (self.upstream is None) != (self.model is None):
            raise ValueError("embedding.upstream and embedding.model go together")
        return self


class Limits(_Strict):
    """Requests and tokens allowed per minute (a sliding window); null means unlimited."""

    requests_per_minute: int | None = Field(default=None, ge=1, description="Requests per minute.")
    tokens_per_minute: int | None = Field(default=None, ge=1, description="Prompt plus completion tokens per minute.")


class RedisSettings(_Strict):
    """How the gateway talks to Redis when ``redis_url`` is set."""

    timeout_s: float = Field(default=0.25, gt=0, description="Deadline for one Redis command, connecting included.")
    max_connections: int = Field(default=64, ge=1, description="Connection pool size (callers wait at most timeout_s).")
    key_prefix: str = Field(default="prefit:", description="Prefix of every key Prefit writes.")
    down_for_s: float = Field(
        default=1.0, ge=0, description="After a Redis fault, skip Redis for this long instead of waiting on it again."
    )


class CacheSettings(_Strict):
    """The exact response cache (keyed by the final upstream body)."""

    enabled: bool = Field(default=True, description="Master switch.")
    ttl_s: float = Field(
        default=3600.0, gt=0, description="How long an answer is kept, unless a policy says otherwise."
    )
    max_entry_bytes: int = Field(default=1024 * 1024, ge=1024, description="Larger answers are not cached.")
    max_entries: int = Field(
        default=10_000, ge=1, description="In-process cache size (Redis evicts by its own policy)."
    )


class RateLimitSettings(_Strict):
    """Limits per gateway key (per client address when no keys are configured)."""

    per_key: Limits = Field(default_factory=Limits, description="Applied to each key separately.")
    on_backend_error: Literal["open", "closed"] = Field(
        default="open", description="When Redis is unreachable: let requests through, or refuse them (503)."
    )


class ResilienceSettings(_Strict):
    """Retries, circuit breaking and the overall deadline of a request."""

    retries: int = Field(default=2, ge=0, le=10, description="Extra attempts on connect errors, 429 and 5xx.")
    backoff_s: float = Field(default=0.25, ge=0, description="First backoff; doubles each attempt, with full jitter.")
    backoff_max_s: float = Field(default=8.0, ge=0, description="Longest single wait, Retry-After included.")
    request_deadline_s: float = Field(default=300.0, gt=0, description="Whole request budget across every attempt.")
    breaker_failures: int = Field(default=5, ge=1, description="Consecutive failures that open an upstream's circuit.")
    breaker_reset_s: float = Field(
        default=30.0, gt=0, description="How long an open circuit fails fast before a trial."
    )


class FeedbackSettings(_Strict):
    """Production feedback: how long a request is remembered, how experiments and copies run."""

    remember_s: float = Field(
        default=86_400.0, gt=0, description="How long feedback for a request is accepted after it finished."
    )
    max_remembered: int = Field(
        default=100_000,
        ge=1,
        description="Requests remembered in process when there is no Redis, oldest dropped first "
        "(about 30 MB per 100,000).",
    )
    max_metrics: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Distinct metric names a policy accepts when it does not list `feedback_metrics`.",
    )
    refresh_s: float = Field(default=10.0, gt=0, description="How often experiment allocations are recomputed.")
    shadow_concurrency: int = Field(
        default=4, ge=1, description="Shadow calls in flight per replica; a copy beyond it is dropped and counted."
    )
    shadow_dir: str = Field(
        default=".prefit/shadow", description="Where shadow answers are stored, one JSONL per policy."
    )


class Price(_Strict):
    """USD per million tokens for one upstream model."""

    input: float = Field(ge=0, description="USD per million prompt tokens.")
    output: float = Field(ge=0, description="USD per million completion tokens.")
    cached_input: float | None = Field(default=None, ge=0, description="USD per million cached prompt tokens.")


class TracingSettings(_Strict):
    """OpenTelemetry traces over OTLP/HTTP: a span per request, layer stage, chain step and upstream call.

    Spans carry names, models, token counts and policy facts, never prompt or completion text.
    Export is batched in the background with a bounded queue; when it is full, spans are dropped
    rather than the request slowed. Read at startup (a reload does not change it)."""

    otlp_endpoint: str = Field(
        pattern=r"^https?://",
        description="The OTLP/HTTP traces URL, e.g. `http://localhost:4318/v1/traces`.",
        examples=["http://localhost:4318/v1/traces"],
    )
    sample: float = Field(
        default=1.0, ge=0, le=1, description="Share of new traces kept; a client's `traceparent` decision is kept."
    )
    service_name: str = Field(default="prefit", min_length=1, description="The `service.name` resource attribute.")
    max_queue_size: int = Field(default=2048, ge=1, description="Spans waiting for export; beyond it they are dropped.")


class Settings(_Strict):
    """The gateway settings file, ``prefit.yaml``."""

    upstreams: dict[str, UpstreamSettings] = Field(description="Named upstreams that policies refer to.")
    default_upstream: str | None = Field(
        default="openai", description="Serves model names that have no policy; null answers 404 model_not_found."
    )
    policies_dir: str = Field(default="policies", description="Directory of policy files, relative to this file.")
    keys: list[GatewayKey] = Field(
        default_factory=list, description="Gateway API keys, plain or `sha256:<hex>`; empty means no auth."
    )
    metrics_key: GatewayKey | None = Field(default=None, description="Bearer key that /metrics requires, if set.")
    admin_keys: list[GatewayKey] = Field(default_factory=list, description="Keys for /console.")
    redis_url: str | None = Field(default=None, description="Redis for shared cache and rate limits.")
    redis: RedisSettings = Field(default_factory=RedisSettings, description="Redis client behaviour.")
    cache: CacheSettings = Field(default_factory=CacheSettings, description="Exact response cache.")
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings, description="Rate limits per key.")
    resilience: ResilienceSettings = Field(default_factory=ResilienceSettings, description="Retries and breakers.")
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings, description="Vector store.")
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings, description="Embedding model.")
    prices: dict[str, Price] = Field(default_factory=dict, description="Prices by upstream model.")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Largest request body accepted (413).")
    models_cache_s: float = Field(default=60.0, ge=0, description="How long the upstream model list is cached.")
    access_log: bool = Field(default=True, description="One JSON line per request on the prefit.access logger.")
    reload: bool = Field(default=True, description="Watch the settings file and policies and reload on change.")
    tracing: TracingSettings | None = Field(default=None, description="OpenTelemetry tracing; off when unset.")
    feedback: FeedbackSettings = Field(
        default_factory=FeedbackSettings, description="Feedback, experiments, shadow variants."
    )
    eval_runs_dir: str = Field(
        default=".prefit/eval-runs",
        description="Where `prefit eval` stores every run (unless `--no-save`) for `prefit history`, `prefit diff` "
        "and the console.",
    )

    @model_validator(mode="after")
    def _default_upstream_exists(self) -> Settings:
        if self.default_upstream is not None and self.default_upstream not in self.upstreams:
            raise ValueError(f"default_upstream {self.default_upstream!r} is not one of the upstreams")
        if self.embedding.upstream is not None and self.embedding.upstream not in self.upstreams:
            raise ValueError(f"embedding.upstream {self.embedding.upstream!r} is not one of the upstreams")
        return self


DEFAULT_SETTINGS_YAML = """\
# Built-in settings: what `prefit serve` uses with no --config and no ./prefit.yaml.
upstreams:
  openai: {base_url: https://api.openai.com/v1, api_key: ${OPENAI_API_KEY}}
default_upstream: openai
policies_dir: policies
"""
