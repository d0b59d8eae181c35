"""Prometheus metrics with the names the contract fixes, on a registry owned by one app.

Labels come only from bounded sets (policy names, variant names, upstream names, status codes),
never from keys, users or prompt text. Label children are cached so the hot path pays one dict
lookup instead of ``labels()`` validation per observation.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_HITS_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 16, 32)


class _Family:
    """A metric whose label children are created once and then looked up by tuple."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def child(self, *labels: str) -> Any:
        found = self._children.get(labels)
        if found is None:
            found = self._children[labels] = self._metric.labels(*labels)
        return found


class Metrics:
    """Every Prefit metric, registered on its own ``CollectorRegistry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = _Family(
            Counter(
                "prefit_requests",
                "Requests served, by policy, variant, prompt version, upstream, upstream model and status.",
                ["policy", "variant", "prompt_version", "upstream", "model", "status"],
                registry=r,
            )
        )
        self.request_duration = _Family(
            Histogram(
                "prefit_request_duration_seconds",
                "Whole request time as the client saw it.",
                ["policy", "variant"],
                buckets=_LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.upstream_duration = _Family(
            Histogram(
                "prefit_upstream_duration_seconds",
                "Time spent on each upstream call.",
                ["upstream"],
                buckets=_LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.ttft = _Family(
            Histogram(
                "prefit_time_to_first_token_seconds",
                "Time from request to the first streamed content chunk.",
                ["policy", "variant"],
                buckets=_LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.stage_duration = _Family(
            Histogram(
                "prefit_stage_duration_seconds",
                "Time spent in each gateway stage.",
                ["stage"],
                buckets=_STAGE_BUCKETS,
                registry=r,
            )
        )
        self.tokens = _Family(
            Counter(
                "prefit_tokens",
                "Tokens by kind: prompt and completion from upstream usage, injected by policy.",
                ["policy", "variant", "kind"],
                registry=r,
            )
        )
        self.retrieval_hits = _Family(
            Histogram(
                "prefit_retrieval_hits",
                "Passages retrieved per request.",
                ["policy"],
                buckets=_HITS_BUCKETS,
                registry=r,
            )
        )
        self.cache_requests = _Family(
            Counter("prefit_cache_requests", "Response cache lookups by result.", ["result"], registry=r)
        )
        self.output_validation = _Family(
            Counter("prefit_output_validation", "Output validation results.", ["policy", "result"], registry=r)
        )
        self.upstream_errors = _Family(
            Counter("prefit_upstream_errors", "Failed upstream calls by reason.", ["upstream", "reason"], registry=r)
        )
        self.spans_dropped = Counter(
            "prefit_trace_spans_dropped",
            "Trace spans dropped because the exporter's queue was full (a slow or absent collector).",
            registry=r,
        )
        self.config_reloads = _Family(
            Counter("prefit_config_reloads", "Configuration reloads by result.", ["result"], registry=r)
        )
        self.rate_limited = _Family(
            Counter("prefit_rate_limited", "Requests refused by a rate limit.", ["policy"], registry=r)
        )
        self.state_errors = _Family(
            Counter("prefit_state_errors", "Failed cache or rate-limit backend calls.", ["backend", "op"], registry=r)
        )
        self.circuit_open = _Family(
            Gauge("prefit_circuit_open", "1 while an upstream's circuit breaker is open.", ["upstream"], registry=r)
        )
        self.upstream_retries = _Family(
            Counter(
                "prefit_upstream_retries",
                "Extra upstream attempts, by upstream and reason.",
                ["upstream", "reason"],
                registry=r,
            )
        )
        self.step_duration = _Family(
            Histogram(
                "prefit_step_duration_seconds",
                "Time spent in each step of a chain.",
                ["policy", "step"],
                buckets=_LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.retrieval_errors = _Family(
            Counter(
                "prefit_retrieval_errors",
                "Vector-store searches (retrieval, dynamic few-shot) that could not run, by policy and reason "
                "(store_locked, store_unreachable, collection_missing, embedder_mismatch, embed_failed, timeout, "
                "other).",
                ["policy", "reason"],
                registry=r,
            )
        )
        self.usage_missing = _Family(
            Counter(
                "prefit_usage_missing",
                "Upstream answers that reported no token usage (so no tokens or spend were counted for them), "
                "by policy, variant and the upstream that answered.",
                ["policy", "variant", "upstream"],
                registry=r,
            )
        )
        self.cost = _Family(
            Counter(
                "prefit_cost_usd",
                "Spend in USD from upstream usage and prices.",
                ["policy", "variant", "model"],
                registry=r,
            )
        )

        self.feedback = _Family(
            Counter(
                "prefit_feedback",
                "Feedback received, by the policy and variant that answered and the metric.",
                ["policy", "variant", "metric"],
                registry=r,
            )
        )
        self.feedback_value_sum = _Family(
            Gauge(
                "prefit_feedback_value_sum",
                "Sum of feedback values (true is 1, false 0), by policy, variant and metric.",
                ["policy", "variant", "metric"],
                registry=r,
            )
        )
        self.experiment_share = _Family(
            Gauge(
                "prefit_experiment_share",
                "Share of new traffic each experiment arm gets, as last recomputed.",
                ["policy", "variant"],
                registry=r,
            )
        )
        self.shadow = _Family(
            Counter(
                "prefit_shadow",
                "Shadow copies by result (stored, failed, dropped when the concurrency bound is full).",
                ["policy", "result"],
                registry=r,
            )
        )
        self.captured = _Family(
            Counter(
                "prefit_captured",
                "Requests captured as candidate eval items, by result (stored, dropped).",
                ["policy", "result"],
                registry=r,
            )
        )

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_duration.child(stage).observe(seconds)

    def observe_upstream(self, upstream: str, seconds: float) -> None:
        self.upstream_duration.child(upstream).observe(seconds)

    def count_upstream_error(self, upstream: str, reason: str) -> None:
        self.upstream_errors.child(upstream, reason).inc()

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
