"""Live statistics from the gateway's own metrics registry, over a small ring of samples.

A sample reads the counters and histogram buckets of ``prefit_requests_total``,
``prefit_request_duration_seconds``, ``prefit_tokens_total`` and (when the gateway counts spend)
``prefit_cost_usd_total``. The console takes one when a stats view is requested (at most every
``min_interval_s``) and keeps the last ``size``; figures for "the last minutes" are differences
between the newest sample and the oldest one inside the window. Before there are two samples, the
figures run from process start. Quantiles are interpolated inside histogram buckets, as
Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

__all__ = ["Row", "Sample", "StatsRing", "quantile", "take_sample"]

Pair = tuple[str, str]


@dataclass(slots=True)
class Sample:
    at: float
    requests: dict[Pair, float] = field(default_factory=dict)
    errors: dict[Pair, float] = field(default_factory=dict)
    tokens: dict[tuple[str, str, str], float] = field(default_factory=dict)
    cost: dict[Pair, float] = field(default_factory=dict)
    has_cost: bool = False
    buckets: dict[Pair, dict[float, float]] = field(default_factory=dict)


def _add(table: dict[Pair, float], key: Pair, value: float) -> None:
    table[key] = table.get(key, 0.0) + value


def take_sample(registry: CollectorRegistry, now: float | None = None) -> Sample:
    """The current totals, by (policy, variant)."""
    sample = Sample(time.time() if now is None else now)
    for family in registry.collect():
        for s in family.samples:
            labels = s.labels
            pair = (labels.get("policy", ""), labels.get("variant", ""))
            if s.name == "prefit_requests_total":
                _add(sample.requests, pair, s.value)
                if not labels.get("status", "").startswith("2"):
                    _add(sample.errors, pair, s.value)
            elif s.name == "prefit_tokens_total":
                key = (*pair, labels.get("kind", ""))
                sample.tokens[key] = sample.tokens.get(key, 0.0) + s.value
            elif s.name == "prefit_cost_usd_total":
                sample.has_cost = True
                _add(sample.cost, pair, s.value)
            elif s.name == "prefit_request_duration_seconds_bucket":
                le = float(labels["le"])
                buckets = sample.buckets.setdefault(pair, {})
                buckets[le] = buckets.get(le, 0.0) + s.value
    return sample


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of cumulative bucket counts (upper bound ``le`` to count); None without data."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
        previous_bound, previous_count = bound, count
    return previous_bound


@dataclass(slots=True)
class Row:
    """One policy variant over the window."""

    policy: str
    variant: str
    requests: float
    errors: float
    p50_s: float | None
    p99_s: float | None
    prompt_tokens: float
    completion_tokens: float
    injected_tokens: float
    cost_usd: float | None
    series: list[float]

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def _minus(new: Mapping[float, float], old: Mapping[float, float]) -> dict[float, float]:
    return {bound: count - old.get(bound, 0.0) for bound, count in new.items()}


class StatsRing:
    """The last ``size`` samples of one metrics registry."""

    def __init__(self, registry: CollectorRegistry, size: int = 30, min_interval_s: float = 2.0) -> None:
        self.registry = registry
        self.samples: deque[Sample] = deque(maxlen=size)
        self.min_interval_s = min_interval_s

    def sample(self, now: float | None = None) -> Sample:
        now = time.time() if now is None else now
        if self.samples and now - self.samples[-1].at < self.min_interval_s:
            return self.samples[-1]
        taken = take_sample(self.registry, now)
        self.samples.append(taken)
        return taken

    def window(self, minutes: float, now: float | None = None) -> tuple[list[Row], float | None, bool]:
        """Rows over the last ``minutes`` (from process start with one sample), the window's start
        (None: process start) and whether any spend is counted."""
        latest = self.sample(now)
        inside = [s for s in self.samples if s.at >= latest.at - minutes * 60]
        base = inside[0] if len(inside) > 1 else Sample(0.0)
        series_samples = inside if len(inside) > 1 else []
        rows = []
        for pair in sorted(latest.requests):
            requests = latest.requests[pair] - base.requests.get(pair, 0.0)
            tokens = {
                kind: latest.tokens.get((*pair, kind), 0.0) - base.tokens.get((*pair, kind), 0.0)
                for kind in ("prompt", "completion", "injected")
            }
            buckets = _minus(latest.buckets.get(pair, {}), base.buckets.get(pair, {}))
            cost = latest.cost.get(pair, 0.0) - base.cost.get(pair, 0.0) if latest.has_cost else None
            series = [
                b.requests.get(pair, 0.0) - a.requests.get(pair, 0.0) for a, b in itertools.pairwise(series_samples)
            ]
            rows.append(
                Row(
                    pair[0],
                    pair[1],
                    requests,
                    latest.errors.get(pair, 0.0) - base.errors.get(pair, 0.0),
                    quantile(0.5, buckets),
                    quantile(0.99, buckets),
                    tokens["prompt"],
                    tokens["completion"],
                    tokens["injected"],
                    cost,
                    series,
                )
            )
        return rows, (base.at if len(inside) > 1 else None), latest.has_cost
