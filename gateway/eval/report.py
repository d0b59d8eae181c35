"""Summaries, paired comparisons and gates for ``prefit eval``, as a rich table and as JSON.

A report must not claim more than was measured: a variant whose every call failed has no score
and no interval ("not measured", null in JSON), and latencies cover only the calls this run made,
never the ones replayed from the cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from gateway.eval.retrieval import retrieval_metrics
from gateway.eval.runner import ItemResult
from gateway.eval.stats import mcnemar_exact, percentile, wilson
from gateway.eval.steps import step_means

__all__ = ["Comparison", "Summary", "check_gates", "compare", "render_report", "report_json", "summarise"]


@dataclass(slots=True)
class Summary:
    variant: str
    n: int
    #: Items that got an answer (``n`` less errors); 0 means nothing was measured.
    measured: int
    #: None for every metric when nothing was measured.
    scores: dict[str, float | None]
    interval: tuple[float, float] | None
    #: Over the calls this run made (not cached, not failed); None when there were none.
    p50_s: float | None
    p95_s: float | None
    prompt_tokens: int
    completion_tokens: int
    errors: int
    cached: int
    cost_usd: float | None
    results: list[ItemResult] = field(repr=False, default_factory=list)
    #: The error that happened first (by time, not by item id): later ones are often its echo,
    #: such as an open circuit after connection failures.
    first_error: str | None = None
    #: ``{recall_at_k, mrr, k, n}`` over the items with ``expected_sources``; None when none has any.
    retrieval: dict[str, Any] | None = None


@dataclass(slots=True)
class Comparison:
    variant: str
    baseline: str
    metric: str
    better: int
    worse: int
    p_value: float
    regressed: list[str]


def summarise(variant: str, results: list[ItemResult], metrics: list[str]) -> Summary:
    """Scores over every item (a failed call scores 0), unless no call succeeded at all."""
    primary = metrics[0]
    n = len(results)
    failed = [r for r in results if r.error is not None]
    measured = n - len(failed)
    scores: dict[str, float | None] = {
        m: (sum(r.scores.get(m, 0.0) for r in results) / n if measured else None) for m in metrics
    }
    passed = sum(1 for r in results if r.scores.get(primary, 0.0) >= 0.5)
    latencies = [r.latency_s for r in results if r.error is None and not r.cached and r.latency_s is not None]
    return Summary(
        variant,
        n,
        measured,
        scores,
        wilson(passed, n) if measured else None,
        percentile(latencies, 50) if latencies else None,
        percentile(latencies, 95) if latencies else None,
        sum(r.prompt_tokens for r in results),
        sum(r.completion_tokens for r in results),
        len(failed),
        sum(1 for r in results if r.cached),
        _total_cost(results),
        results,
        min(failed, key=lambda r: r.finished_at).error if failed else None,
        retrieval_metrics([(r.retrieved, r.item.expected_sources) for r in results]),
    )


def _total_cost(results: list[ItemResult]) -> float | None:
    """Spend on the variant, None when no item had a priced model."""
    priced = [r.cost_usd for r in results if r.cost_usd is not None]
    return sum(priced) if priced else None


def compare(candidate: Summary, baseline: Summary, metric: str) -> Comparison:
    """Paired by item and repeat: items the baseline got right and the candidate wrong are regressions."""
    base = {(r.item.id, r.repeat): r.scores.get(metric, 0.0) >= 0.5 for r in baseline.results}
    better = worse = 0
    regressed = []
    for result in candidate.results:
        key = (result.item.id, result.repeat)
        if key not in base:
            continue
        ok = result.scores.get(metric, 0.0) >= 0.5
        if ok and not base[key]:
            better += 1
        elif base[key] and not ok:
            worse += 1
            regressed.append(result.item.id)
    return Comparison(
        candidate.variant, baseline.variant, metric, better, worse, mcnemar_exact(better, worse), regressed
    )


_GATE = re.compile(r"^\s*(>=|<=|>|<|==)\s*(-?[0-9]*\.?[0-9]+)\s*$")


def check_gates(summaries: list[Summary], gates: dict[str, str], gated: set[str] | None = None) -> list[str]:
    """Every missed gate as a sentence; empty when all pass.

    Gates apply to the variants in ``gated`` (those that serve traffic; all when None): a zero-weight
    arm run as a baseline is measured, not gated. A variant whose every call failed measured
    nothing, and fails whether or not it has gates.
    """
    failures = []
    for summary in summaries:
        if not summary.measured:
            failures.append(f"{summary.variant}: every call failed, nothing was measured")
            continue
        if gated is not None and summary.variant not in gated:
            continue
        for metric, gate in gates.items():
            match = _GATE.match(gate)
            if match is None:
                failures.append(f"gate {metric}: {gate!r} is not a comparison")
                continue
            op, threshold = match.group(1), float(match.group(2))
            if metric not in summary.scores:
                failures.append(f"{summary.variant}: gate on {metric!r}, which is not among the metrics")
                continue
            value = summary.scores[metric] or 0.0
            ok = {
                ">=": value >= threshold,
                "<=": value <= threshold,
                ">": value > threshold,
                "<": value < threshold,
                "==": value == threshold,
            }[op]
            if not ok:
                failures.append(f"{summary.variant}: {metric} = {value:.3f}, gate {op}{threshold:g}")
    return failures


def render_report(
    console: Console,
    policy: str,
    summaries: list[Summary],
    comparisons: list[Comparison],
    metrics: list[str],
    failures: list[str],
) -> None:
    table = Table(title=f"prefit eval: {policy}")
    table.add_column("variant")
    table.add_column("n", justify="right")
    table.add_column(f"{metrics[0]} (95% CI)", justify="right")
    for metric in metrics[1:]:
        table.add_column(metric, justify="right")
    steps = _step_names(summaries)
    for step in steps:
        table.add_column(f"step {step} {metrics[0]}", justify="right")
    for column in ("p50 s", "p95 s", "prompt tok", "completion tok", "cost USD", "errors", "cached"):
        table.add_column(column, justify="right")
    for s in summaries:
        table.add_row(
            s.variant,
            str(s.n),
            _primary_cell(s, metrics[0]),
            *[_number(s.scores[m]) for m in metrics[1:]],
            *[_number(step_means(s.results, metrics[0]).get(step), "-") for step in steps],
            _number(s.p50_s, "-"),
            _number(s.p95_s, "-"),
            str(s.prompt_tokens),
            str(s.completion_tokens),
            "-" if s.cost_usd is None else f"{s.cost_usd:.6f}",
            str(s.errors),
            str(s.cached),
        )
    console.print(table)
    cached = sum(s.cached for s in summaries)
    if cached:
        console.print(
            f"cached: {cached} item(s) replayed stored answers; latencies cover only the calls made now (--no-cache)"
        )
    for c in comparisons:
        console.print(
            f"{c.variant} vs {c.baseline} on {c.metric}: {c.better} better, {c.worse} worse, "
            f"exact McNemar p = {c.p_value:.4f}" + (f"; regressed: {', '.join(c.regressed)}" if c.regressed else "")
        )
    for s in summaries:
        if s.retrieval is not None:
            r = s.retrieval
            console.print(
                f"{s.variant} retrieval: recall@{r['k']} {r['recall_at_k']:.3f}, MRR {r['mrr']:.3f} ({r['n']} items)"
            )
    for s in summaries:
        if s.first_error is not None:
            console.print(f"[yellow]{s.variant}: {s.errors} of {s.n} calls failed[/yellow]; first: {s.first_error}")
    for failure in failures:
        console.print(f"[red]gate failed[/red] {failure}")
    if not failures:
        console.print("all gates passed" if summaries else "nothing was run")


def _step_names(summaries: list[Summary]) -> list[str]:
    """Steps any item expects something of, in first-seen order."""
    names = (step for s in summaries for r in s.results for step in r.step_scores)
    return list(dict.fromkeys(names))


def _step_scores(summary: Summary) -> dict[str, dict[str, float]]:
    """Step -> metric -> mean, over the items that expect something of the step."""
    by_metric = {metric: step_means(summary.results, metric) for metric in summary.scores}
    steps = next(iter(by_metric.values()), {})
    return {step: {metric: means[step] for metric, means in by_metric.items()} for step in steps}


def _number(value: float | None, missing: str = "not measured") -> str:
    return missing if value is None else f"{value:.3f}"


def _primary_cell(summary: Summary, metric: str) -> str:
    value = summary.scores[metric]
    if value is None or summary.interval is None:
        return "not measured"
    low, high = summary.interval
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def report_json(
    policy: str, dataset: str, summaries: list[Summary], comparisons: list[Comparison], failures: list[str]
) -> dict[str, Any]:
    return {
        "policy": policy,
        "dataset": dataset,
        "variants": {
            s.variant: {
                "n": s.n,
                "measured": s.measured,
                "scores": s.scores,
                "interval": list(s.interval) if s.interval is not None else None,
                "p50_s": s.p50_s,
                "p95_s": s.p95_s,
                "prompt_tokens": s.prompt_tokens,
                "completion_tokens": s.completion_tokens,
                "cost_usd": s.cost_usd,
                "errors": s.errors,
                "cached": s.cached,
                "first_error": s.first_error,
                "step_scores": _step_scores(s),
                "retrieval": s.retrieval,
                "items": [r.as_json() for r in s.results],
            }
            for s in summaries
        },
        "comparisons": [
            {
                "variant": c.variant,
                "baseline": c.baseline,
                "metric": c.metric,
                "better": c.better,
                "worse": c.worse,
                "p_value": c.p_value,
                "regressed": c.regressed,
            }
            for c in comparisons
        ],
        "gate_failures": failures,
        "passed": not failures,
    }
