"""The iteration loop from the command line: stored runs, history, diff, error analysis, the judge."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import write_files
from tests.fakes.upstream import FakeUpstream


def _record(i: int) -> dict[str, object]:
    record: dict[str, object] = {"id": f"t{i}", "input": f"ticket {i}", "expected": "billing" if i < 8 else "shipping"}
    if i != 9:
        record["metadata"] = {"channel": "email" if i % 2 else "chat"}
    return record


DATASET = "\n".join(orjson.dumps(_record(i)).decode() for i in range(10)) + "\n"

ZERO_SHOT = """
upstream_model: fake-label
prompt: {version: v1, system: "Label the ticket."}
eval:
  dataset: file:evals/labeler.jsonl
"""

FEW_SHOT = """
upstream_model: fake-label
prompt: {version: v2, system: "Label the ticket."}
few_shot: {examples: [{input: "refund please", output: billing}]}
eval:
  dataset: file:evals/labeler.jsonl
"""


@pytest.fixture
def workdir(tmp_path: Path, fake_upstream: FakeUpstream) -> Path:
    write_files(
        tmp_path,
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {fake_upstream.base_url}}}\ndefault_upstream: fake\n",
            "policies/labeler.yaml": ZERO_SHOT,
            "policies/evals/labeler.jsonl": DATASET,
        },
    )
    return tmp_path


def _prefit(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=workdir, capture_output=True, text=True, timeout=180
    )


def _json(path: Path) -> dict[str, object]:
    data = orjson.loads(path.read_bytes())
    assert isinstance(data, dict)
    return data


def _two_iterations(workdir: Path) -> tuple[str, str]:
    first = _prefit(workdir, "eval", "labeler", "--json", "one.json")
    assert first.returncode == 0, first.stdout + first.stderr
    (workdir / "policies/labeler.yaml").write_text(FEW_SHOT)
    second = _prefit(workdir, "eval", "labeler", "--json", "two.json", "--by", "channel")
    assert second.returncode == 0, second.stdout + second.stderr
    return str(_json(workdir / "one.json")["run_id"]), str(_json(workdir / "two.json")["run_id"])


def test_every_run_is_stored_and_history_shows_the_paired_change(workdir: Path) -> None:
    one, two = _two_iterations(workdir)
    stored = sorted(p.stem for p in (workdir / ".prefit/eval-runs").glob("*.json"))
    assert stored == sorted([one, two])
    run = _json(workdir / ".prefit/eval-runs" / f"{two}.json")
    variant = run["variants"]["default"]  # type: ignore[index]
    assert variant["prompt_version"] == "v2"
    assert len(variant["content_hash"]) == 64 and len(str(run["dataset_hash"])) == 64
    shown = _prefit(workdir, "history", "labeler", "--json", "history.json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "p = 0.0078 significant" in shown.stdout
    rows = _json(workdir / "history.json")["runs"]
    assert isinstance(rows, list) and [r["run_id"] for r in rows] == [one, two]
    first, second = rows
    assert (first["prompt_version"], first["score"], first["previous_run"]) == ("v1", 0.0, None)
    assert first["content_hash"] != second["content_hash"]
    assert (second["prompt_version"], second["score"], second["previous_run"]) == ("v2", 0.8, one)
    assert second["delta"] == pytest.approx(0.8)
    assert (second["fixed"], second["broken"], second["shared"]) == (8, 0, 10)
    assert second["p_value"] == pytest.approx(2 / 2**8) and second["significant"] is True
    assert second["low"] == pytest.approx(0.4902, abs=1e-3)


def test_no_save_stores_nothing(workdir: Path) -> None:
    done = _prefit(workdir, "eval", "labeler", "--no-save")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (workdir / ".prefit/eval-runs").exists()


def test_diff_lists_the_flipped_items_with_both_outputs(workdir: Path) -> None:
    one, two = _two_iterations(workdir)
    done = _prefit(workdir, "diff", one, str(workdir / "two.json"), "--json", "diff.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 fixed, 0 broken" in done.stdout
    variant: dict[str, Any] = _json(workdir / "diff.json")["variants"][0]  # type: ignore[index]
    assert len(_json(workdir / "diff.json")["variants"]) == 1  # type: ignore[arg-type]
    assert [f["id"] for f in variant["fixed"]] == [f"t{i}" for i in range(8)]
    assert variant["fixed"][0] | {"before_error": None} == {
        "id": "t0",
        "repeat": 0,
        "input": "ticket 0",
        "expected": "billing",
        "before": "unknown",
        "after": "billing",
        "before_error": None,
        "after_error": None,
    }
    assert variant["broken"] == []
    back = _prefit(workdir, "diff", two, one, "--json", "back.json")
    assert back.returncode == 0
    assert len(_json(workdir / "back.json")["variants"][0]["broken"]) == 8  # type: ignore[index]
    missing = _prefit(workdir, "diff", one, "no-such-run")
    assert missing.returncode == 2 and "no stored run 'no-such-run'" in missing.stderr


def test_the_report_says_which_inputs_get_which_errors(workdir: Path) -> None:
    _, _ = _two_iterations(workdir)
    variant = _json(workdir / "two.json")["variants"]["default"]  # type: ignore[index]
    near = pytest.approx
    assert variant["slices"] == {
        "channel": {
            "(none)": {"n": 1, "score": 0.0, "low": 0.0, "high": near(0.7935, abs=1e-3)},
            "chat": {"n": 5, "score": 0.8, "low": near(0.3755, abs=1e-3), "high": near(0.9638, abs=1e-3)},
            "email": {"n": 4, "score": 1.0, "low": near(0.5101, abs=1e-3), "high": near(1.0)},
        }
    }
    assert variant["confusion"] == {"billing": {"billing": 8}, "shipping": {"billing": 2}}
    assert variant["failures"] == {"format": 0, "content": 2, "error": 0}
    assert [c["size"] for c in variant["clusters"]] == [2]
    assert sorted(variant["clusters"][0]["items"]) == ["t8", "t9"]
    assert variant["clusters"][0]["example"]["output"] == "billing"
    failures = {i["id"]: i["failure"] for i in variant["items"]}
    assert failures["t8"] == "content" and failures["t0"] is None


def test_a_by_field_some_items_lack_is_named_with_file_and_line(workdir: Path) -> None:
    done = _prefit(workdir, "eval", "labeler", "--by", "channel", "--no-save")
    assert done.returncode == 0, done.stdout + done.stderr
    shown = "".join(done.stdout.split())  # rich wraps long lines
    assert "labeler.jsonl:10:nometadatafield'channel';1item(s)countedas(none)" in shown
    refused = _prefit(workdir, "eval", "labeler", "--by", "chanel", "--no-save")
    assert refused.returncode == 2
    assert "--by chanel: no item has metadata field 'chanel'" in refused.stderr
    assert "labeler.jsonl:1," in refused.stderr


def test_a_line_that_is_not_json_is_named(workdir: Path) -> None:
    (workdir / "policies/evals/labeler.jsonl").write_text('{"input": "x", "expected": "y"}\n{"input": \n')
    done = _prefit(workdir, "eval", "labeler")
    assert done.returncode == 2
    assert "labeler.jsonl:2: not JSON" in done.stderr


JUDGED = """
upstream_model: fake-label
few_shot: {examples: [{input: "refund please", output: billing}]}
eval:
  dataset: file:evals/labeler.jsonl
  metrics: [{judge: {model: grader, pass: ">=4"}}, exact_match]
"""


def test_a_judge_policy_grades_each_answer(workdir: Path, upstream: FakeUpstream) -> None:
    (workdir / "policies/labeler.yaml").write_text(JUDGED)
    (workdir / "policies/grader.yaml").write_text(
        "upstream_model: fake-judge\n"
        "prompt: {version: g1, system: 'Grade: {{ metadata.output }}', metadata: [input, expected, output]}\n"
    )
    done = _prefit(workdir, "eval", "labeler", "--json", "judged.json", "--no-save")
    assert done.returncode == 0, done.stdout + done.stderr
    variant = _json(workdir / "judged.json")["variants"]["default"]  # type: ignore[index]
    assert variant["scores"] == {"judge:grader": 0.8, "exact_match": 0.8}
    item = next(i for i in variant["items"] if i["id"] == "t9")
    assert item["judge"] == {"model": "grader", "grade": 2.0, "answer": "2"}
    asked = [r.body for r in upstream.requests if r.body and r.body.get("model") == "fake-judge"]
    assert len(asked) == 10
    assert asked[0]["messages"][-1]["content"].startswith("Input:\nticket ")
    assert asked[0]["messages"][0] == {"role": "system", "content": "Grade: billing"}, "metadata reaches the template"
    again = _prefit(workdir, "eval", "labeler", "--json", "again.json", "--no-save")
    assert again.returncode == 0
    judge_calls = [r for r in upstream.requests if r.body and r.body.get("model") == "fake-judge"]
    assert len(judge_calls) == 10, "the judge's verdicts are cached like any call"


def test_a_judge_that_answers_words_marks_the_item_error(workdir: Path) -> None:
    (workdir / "policies/labeler.yaml").write_text(JUDGED)
    (workdir / "policies/grader.yaml").write_text("upstream_model: fake-judge-words\n")
    done = _prefit(workdir, "eval", "labeler", "--json", "judged.json", "--no-save")
    assert done.returncode == 1, done.stdout + done.stderr  # nothing measured: every item is an error
    variant = _json(workdir / "judged.json")["variants"]["default"]  # type: ignore[index]
    item = variant["items"][0]
    assert item["error"] == "judge grader answered 'Looks fine to me.', not a number"
    assert item["failure"] == "error"
    assert variant["failures"] == {"format": 0, "content": 0, "error": 10}
