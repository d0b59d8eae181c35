"""Live stats from a metrics registry (windows, quantiles, cost) and the SVG the console draws."""

from __future__ import annotations

from gateway.console.charts import IntervalRow, interval_chart, sparkline
from gateway.console.diff import PromptSource, prompt_diff
from gateway.console.stats import StatsRing, quantile
from gateway.metrics import Metrics


def test_quantile_interpolates_inside_buckets() -> None:
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == 0.1
    assert abs((quantile(0.7, buckets) or 0) - 0.3) < 1e-9
    assert quantile(0.99, {0.1: 0.0, float("inf"): 4.0}) == 0.1
    assert quantile(0.5, {}) is None
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None


def test_window_counts_requests_errors_tokens_and_cost_between_samples() -> None:
    metrics = Metrics()
    ring = StatsRing(metrics.registry, size=30, min_interval_s=1.0)
    metrics.requests.child("ab", "control", "v2", "fake", "gpt-4o-mini", "200").inc(10)
    rows, since, has_cost = ring.window(15, now=1000.0)
    assert since is None and not has_cost
    assert [(r.policy, r.variant, r.requests) for r in rows] == [("ab", "control", 10.0)]
    assert rows[0].cost_usd is None

    metrics.requests.child("ab", "control", "v2", "fake", "gpt-4o-mini", "200").inc(6)
    metrics.requests.child("ab", "control", "v2", "fake", "gpt-4o-mini", "502").inc(2)
    for seconds in (0.02, 0.02, 0.3, 0.3, 0.3, 0.3, 2.0, 2.0):
        metrics.request_duration.child("ab", "control").observe(seconds)
    metrics.tokens.child("ab", "control", "prompt").inc(400)
    metrics.cost.child("ab", "control", "gpt-4o-mini").inc(0.25)
    rows, since, has_cost = ring.window(15, now=1010.0)
    assert since == 1000.0 and has_cost
    row = rows[0]
    assert (row.requests, row.errors, row.prompt_tokens, row.cost_usd) == (8.0, 2.0, 400.0, 0.25)
    assert row.error_rate == 0.25
    assert row.series == [8.0]
    assert row.p50_s is not None and 0.25 <= row.p50_s <= 0.5
    assert row.p99_s is not None and 1.0 <= row.p99_s <= 2.5

    # Samples older than the window drop out of it; a sample less than min_interval_s old is reused.
    rows, since, _ = ring.window(0.1, now=2000.0)
    assert since is None or since >= 2000.0 - 6
    assert len(ring.samples) == 3
    ring.sample(now=2000.5)
    assert len(ring.samples) == 3


def test_interval_chart_escapes_labels_and_clamps() -> None:
    svg = str(interval_chart([IntervalRow("<b>x</b>", 1.4, -0.2, 0.9)], "exact_match"))
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg
    assert svg.startswith('<svg class="chart interval-chart"')
    assert 'style="' not in svg


def test_sparkline_needs_two_points() -> None:
    assert "<svg" not in str(sparkline([3.0]))
    line = str(sparkline([0.0, 2.0, 1.0], label="req"))
    assert "<polyline" in line and line.count(",") == 3


def test_prompt_diff_marks_added_and_removed_lines() -> None:
    lines = prompt_diff(PromptSource("v2", "a\nb\n"), PromptSource("v3", "a\nc\n"))
    kinds = [(line.kind, line.text) for line in lines]
    assert ("del", "-b") in kinds and ("add", "+c") in kinds
    assert kinds[0] == ("meta", "--- v2") and kinds[1] == ("meta", "+++ v3")
    assert prompt_diff(PromptSource("a", "same"), PromptSource("b", "same")) == []
