"""``prefit eval`` on a chain: the steps an item expects something of are scored beside the answer,
and the JSON report carries every step's output for every item."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import write_files
from tests.fakes.roles import RoleUpstream

ITEMS = [
    {
        "id": "love",
        "input": "Alice loves Paris",
        "expected": "summary: positive\npositive",
        "expected_steps": {"extract": ["Paris", "Alice"], "classify": ["positive", "positive"]},
    },
    {
        "id": "hate",
        "input": "Bob hates Rome",
        "expected": "anything",
        "expected_steps": {"extract": ["Bob", "Rome", "Oslo"], "classify": ["negative", "positive"]},
    },
    {"id": "none", "input": "nobody here", "expected": "summary: ", "expected_steps": {"classify": []}},
]


@pytest.fixture
def roles() -> Iterator[RoleUpstream]:
    upstream = RoleUpstream().start()
    yield upstream
    upstream.stop()


def test_eval_scores_each_expected_step(tmp_path: Path, roles: RoleUpstream) -> None:
    def policy(system: str) -> str:
        return f"upstream_model: m\nprompt: {{system: {system}}}\n"

    write_files(
        tmp_path,
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {roles.base_url}}}\ndefault_upstream: fake\n",
            "policies/extract.yaml": policy("Extract the entities."),
            "policies/classify.yaml": policy("Classify the sentiment."),
            "policies/summarise.yaml": policy("Summarise the sentiment."),
            "policies/sentiment.yaml": """
            steps:
              - {name: extract, model: extract}
              - name: classify
                model: classify
                for_each: "{{ steps.extract.json.entities }}"
                input: "{{ item }}: {{ input }}"
              - {name: summary, model: summarise, input: "{{ steps.classify.output }}"}
            eval: {dataset: file:evals/s.jsonl, metrics: [exact_match]}
            variants:
              - {name: chain, weight: 50}
              - {name: one-prompt, weight: 50, steps: [], upstream_model: m, prompt: {system: Summarise it all.}}
            """,
            "policies/evals/s.jsonl": "\n".join(orjson.dumps(item).decode() for item in ITEMS),
        },
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "eval", "sentiment", "--json", "report.json", "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "step classify" in done.stdout and "step extract" in done.stdout and "0.833" in done.stdout
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    variant, single = report["variants"]["chain"], report["variants"]["one-prompt"]
    assert single["step_scores"] == {} and single["items"][0]["steps"] == {}  # nothing to score, not a 0
    assert single["scores"]["exact_match"] == 0.0  # "summary: <the text>", never the chain's answer
    assert variant["step_scores"] == {
        "extract": {"exact_match": pytest.approx((1 + 2 / 3) / 2)},  # as sets: Oslo was expected and not found
        "classify": {"exact_match": pytest.approx((1 + 0.5 + 1) / 3)},
    }
    items = {item["id"]: item for item in variant["items"]}
    assert items["hate"]["step_scores"] == {"extract": {"exact_match": 2 / 3}, "classify": {"exact_match": 0.5}}
    assert items["hate"]["steps"]["classify"] == {"output": "negative\nnegative", "json": ["negative", "negative"]}
    assert set(items["love"]["steps"]) == {"extract", "classify", "summary"}
    assert items["none"]["steps"]["classify"]["json"] == []
    assert items["love"]["scores"]["exact_match"] == 1.0
