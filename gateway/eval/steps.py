"""Scoring a chain's steps, not only its answer: where a decomposition fails is what makes it
correctable. An item's ``expected_steps`` maps a step name to what that step should say; a
``for_each`` step's list of results is scored element by element against a list, and a step
whose JSON is an object holding one list (``{"entities": [...]}``) is scored on that list as a
set: each expected element against its best match, over the larger of the two lengths."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.eval.scoring import Scorer

__all__ = ["score_steps", "step_means"]


def score_steps(
    scorers: list[Scorer], expected_steps: Mapping[str, Any], steps: Mapping[str, Any], context: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Each expected step's score per metric; a step that did not run scores 0."""
    return {
        name: {s.name: _score(s, steps.get(name), expected, context) for s in scorers}
        for name, expected in expected_steps.items()
    }


def _score(scorer: Scorer, shown: Any, expected: Any, context: dict[str, Any]) -> float:
    if not isinstance(shown, dict):
        return 0.0
    results = shown.get("json")
    if isinstance(expected, list) and isinstance(results, list):
        if not expected:
            return 1.0 if not results else 0.0
        pairs = zip(results, expected, strict=False)
        return sum(_safe(scorer, _text(got), want, context) for got, want in pairs) / max(len(expected), len(results))
    held = _one_list(results)
    if isinstance(expected, list) and held is not None:
        if not expected or not held:
            return 1.0 if not expected and not held else 0.0
        best = [max(_safe(scorer, _text(got), want, context) for got in held) for want in expected]
        return sum(best) / max(len(expected), len(held))
    return _safe(scorer, str(shown.get("output", "")), expected, context)


def _one_list(value: Any) -> list[Any] | None:
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _safe(scorer: Scorer, output: str, expected: Any, context: dict[str, Any]) -> float:
    try:
        return max(0.0, min(1.0, scorer.score(output, expected, context)))
    except Exception:
        return 0.0


def step_means(results: list[Any], metric: str) -> dict[str, float]:
    """Per step, the mean ``metric`` over the items that expect something of it."""
    totals: dict[str, list[float]] = {}
    for result in results:
        for step, scores in result.step_scores.items():
            totals.setdefault(step, []).append(scores.get(metric, 0.0))
    return {step: sum(values) / len(values) for step, values in totals.items()}
