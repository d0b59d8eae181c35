"""Which inputs get which kinds of errors: slices, a confusion matrix and failure kinds per variant.

A score says how many items failed; these say where and how. ``failure_kind`` sorts a failed item
into ``format`` (empty, refused, or not the JSON the policy's schema asks for), ``content``
(well-formed but wrong) or ``error`` (no answer at all); ``slices`` scores each value of a
``metadata`` field with its interval (an item without the field counts as ``(none)``);
``confusion`` tabulates expected against given labels when the expected values form a small set.
Functions over ``ItemResult`` lists, with no I/O, so other commands can reuse them.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

import jsonschema
import orjson

from gateway.eval.runner import ItemResult
from gateway.eval.scoring import normalise
from gateway.runs.stats import wilson

__all__ = ["MISSING", "confusion", "failure_counts", "failure_kind", "mark_failures", "passed", "slices"]

MISSING = "(none)"
KINDS = ("format", "content", "error")
_MAX_LABELS = 20
_MAX_OUTPUTS = 5
_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry,|i (can ?not|can't|won't|am unable|'m unable)|as an ai)\b", re.I
)


def passed(result: ItemResult, metric: str) -> bool:
    return result.error is None and result.scores.get(metric, 0.0) >= 0.5


def _not_json_as_asked(output: str, schema: dict[str, Any] | None, expected: Any) -> bool:
    if schema is None and not isinstance(expected, dict | list):
        return False
    text = output.strip()
    if text.startswith("```") and text.endswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return True
    return schema is not None and not jsonschema.Draft202012Validator(schema).is_valid(value)


def malformed(output: str, expected: Any, schema: dict[str, Any] | None = None) -> bool:
    """Whether an answer failed on its form: empty, a refusal, or not the JSON that was asked for.
    The one test of a format failure, for live reports and for runs read back (``signals``)."""
    return not output.strip() or bool(_REFUSAL.match(output)) or _not_json_as_asked(output, schema, expected)


def failure_kind(result: ItemResult, metric: str, schema: dict[str, Any] | None = None) -> str | None:
    """``format``, ``content`` or ``error`` for a failed item; None when it passed."""
    if result.error is not None:
        return "error"
    if passed(result, metric):
        return None
    return "format" if malformed(result.output, result.item.expected, schema) else "content"


def mark_failures(results: list[ItemResult], metric: str, schema: dict[str, Any] | None = None) -> None:
    for result in results:
        result.failure = failure_kind(result, metric, schema)


def failure_counts(results: list[ItemResult]) -> dict[str, int]:
    """``{format: n, content: n, error: n}`` over results already marked by ``mark_failures``."""
    counts = Counter(r.failure for r in results if r.failure is not None)
    return {kind: counts.get(kind, 0) for kind in KINDS}


def _value(result: ItemResult, field: str) -> str:
    value = result.item.metadata.get(field)
    return MISSING if value is None else str(value)


def slices(results: list[ItemResult], fields: list[str], metric: str) -> dict[str, dict[str, dict[str, float]]]:
    """``{field: {value: {n, score, low, high}}}``; the score is the pass rate with its Wilson interval."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for field in fields:
        groups: dict[str, list[ItemResult]] = defaultdict(list)
        for result in results:
            groups[_value(result, field)].append(result)
        out[field] = {}
        for value in sorted(groups):
            group = groups[value]
            ok = sum(1 for r in group if passed(r, metric))
            low, high = wilson(ok, len(group))
            out[field][value] = {"n": len(group), "score": ok / len(group), "low": low, "high": high}
    return out


def _label(result: ItemResult) -> str:
    if result.error is not None:
        return "(error)"
    text = " ".join(result.output.split())
    if not text:
        return "(empty)"
    return text if len(text) <= 40 else text[:39] + "\u2026"


def confusion(results: list[ItemResult]) -> dict[str, dict[str, int]] | None:
    """``{expected: {output: count}}`` when the expected values are a small set of repeated labels.

    Outputs that match a label after normalisation are counted under the label; beyond five
    distinct other outputs, the rarest are pooled as ``(other)``.
    """
    expected = [r.item.expected for r in results]
    if not expected or not all(isinstance(e, str | int | bool) for e in expected):
        return None
    labels = {str(e) for e in expected}
    if len(labels) > _MAX_LABELS or len(labels) >= len(expected):
        return None
    by_norm = {normalise(label): label for label in labels}
    given = [by_norm.get(normalise(r.output), _label(r)) if r.error is None else "(error)" for r in results]
    others = Counter(g for g in given if g not in labels)
    kept = {g for g, _ in others.most_common(_MAX_OUTPUTS)}
    matrix: dict[str, dict[str, int]] = {label: {} for label in sorted(labels)}
    for result, output in zip(results, given, strict=True):
        column = output if output in labels or output in kept else "(other)"
        row = matrix[str(result.item.expected)]
        row[column] = row.get(column, 0) + 1
    return matrix
