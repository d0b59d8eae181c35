"""Error analysis over item results: failure kinds, confusion, slices, grouping, judge grades."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.eval.analysis import confusion, failure_counts, failure_kind, mark_failures, slices
from gateway.eval.clusters import group
from gateway.eval.judge import parse_grade
from gateway.eval.runner import EvalItem, ItemResult
from gateway.eval.scoring import build_scorers

SCHEMA = {"type": "object", "required": ["category"], "properties": {"category": {"type": "string"}}}


def _result(output: str, expected: Any = "billing", score: float = 0.0, error: str | None = None) -> ItemResult:
    result = ItemResult(EvalItem("i", "ticket", expected), "v", 0, output=output, error=error)
    result.scores = {"exact_match": score}
    return result


@pytest.mark.parametrize(
    ("result", "schema", "kind"),
    [
        (_result("billing", score=1.0), None, None),
        (_result("shipping"), None, "content"),
        (_result("   "), None, "format"),
        (_result("I'm sorry, I can't help with that."), None, "format"),
        (_result("", error="502: upstream down"), None, "error"),
        (_result("Sure! billing"), SCHEMA, "format"),
        (_result('{"priority": 2}'), SCHEMA, "format"),
        (_result('```json\n{"category": "shipping"}\n```'), SCHEMA, "content"),
        (_result("not json", expected={"category": "billing"}), None, "format"),
    ],
)
def test_failure_kinds(result: ItemResult, schema: dict[str, Any] | None, kind: str | None) -> None:
    assert failure_kind(result, "exact_match", schema) == kind


def test_failure_counts_cover_every_kind() -> None:
    results = [_result("x"), _result(""), _result("", error="boom"), _result("billing", score=1.0)]
    mark_failures(results, "exact_match")
    assert failure_counts(results) == {"format": 1, "content": 1, "error": 1}


def _labelled(expected: str, output: str) -> ItemResult:
    return _result(output, expected, float(expected == output))


def test_confusion_counts_labels_after_normalising_outputs() -> None:
    results = [_labelled("A", "A"), _labelled("A", "a."), _labelled("A", "B"), _labelled("B", "no idea")]
    results.append(_result("", "B", error="timeout"))
    assert confusion(results) == {"A": {"A": 2, "B": 1}, "B": {"no idea": 1, "(error)": 1}}


def test_no_confusion_without_a_label_set() -> None:
    assert confusion([_labelled(f"answer {i}", "x") for i in range(5)]) is None, "every expected value differs"
    assert confusion([_result("x", {"a": 1}), _result("y", {"a": 1})]) is None, "structured expectations"


def test_slices_count_a_missing_field_as_none() -> None:
    tagged = [_result("billing", score=1.0), _result("x")]
    for result, channel in zip(tagged, ["chat", None], strict=True):
        if channel is not None:
            result.item.metadata["channel"] = channel
    assert slices(tagged, ["channel"], "exact_match") == {
        "channel": {
            "(none)": {"n": 1, "score": 0.0, "low": 0.0, "high": pytest.approx(0.7935, abs=1e-3)},
            "chat": {"n": 1, "score": 1.0, "low": pytest.approx(0.2065, abs=1e-3), "high": 1.0},
        }
    }


def test_group_joins_similar_vectors_and_names_the_central_example() -> None:
    vectors = [[1.0, 0.0], [0.0, 1.0], [0.96, 0.28], [0.9, 0.436], [0.0, -1.0]]
    assert group(vectors, threshold=0.9) == [([0, 2, 3], 2), ([1], 1), ([4], 4)]


@pytest.mark.parametrize(
    ("answer", "grade"), [("4", 4.0), (" 4.5 ", 4.5), ("**5**/5", 5.0), ("3 - partly right", 3.0), ("good", None)]
)
def test_judge_grades(answer: str, grade: float | None) -> None:
    assert parse_grade(answer) == grade


def test_judge_metric_forms() -> None:
    (scorer,) = build_scorers([{"judge": {"model": "grader", "pass": ">= 4"}}], None)
    assert scorer.name == "judge:grader" and scorer.judge is not None
    assert (scorer.judge.passes(4.0), scorer.judge.passes(3.5)) == (True, False)
    with pytest.raises(ValueError, match="judge pass must look like"):
        build_scorers([{"judge": {"model": "grader", "pass": "four"}}], None)
    with pytest.raises(ValueError, match="a judge metric is"):
        build_scorers([{"judge": "grader"}], None)
