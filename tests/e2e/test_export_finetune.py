"""``prefit export-finetune``: chat fine-tuning JSONL through the variant's prompt, test set excluded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from gateway.eval.finetune import validate_line
from tests.conftest import write_files

POLICY = """\
upstream_model: fake-shown
prompt: {system: "Route the input for {{ metadata.team | default('everyone') }}."}
few_shot:
  examples: file:examples/router.jsonl
variants:
  - {name: serving, weight: 100}
  - {name: terse, weight: 0, prompt: {system: "Answer with a code."}}
eval:
  dataset: file:evals/heldout.jsonl
"""


def _jsonl(items: list[dict[str, object]]) -> str:
    return "".join(orjson.dumps(item).decode() + "\n" for item in items)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_files(
        tmp_path,
        {
            "prefit.yaml": "upstreams:\n  fake: {base_url: 'http://127.0.0.1:9/v1'}\ndefault_upstream: fake\n",
            "policies/router.yaml": POLICY,
            "policies/examples/router.jsonl": _jsonl(
                [{"input": "alpha one", "output": "A"}, {"input": "beta held 1", "output": "B"}]
            ),
            "policies/evals/heldout.jsonl": _jsonl([{"id": "h1", "input": "beta held 1", "expected": "B"}]),
            "train.jsonl": _jsonl(
                [
                    {"id": "t1", "input": "alpha train", "expected": "A"},
                    {"id": "h1", "input": "reused id", "expected": "B"},
                    {"id": "t3", "input": "gamma train", "expected": {"code": "C"}},
                ]
            ),
        },
    )
    return tmp_path


def _export(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "export-finetune", "router", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_text().splitlines()]


def test_train_file_through_the_variant_prompt_without_examples(workdir: Path) -> None:
    done = _export(workdir, "--train", "train.jsonl", "--variant", "terse", "--out", "ft.jsonl")
    assert done.returncode == 0, done.stderr
    assert "wrote 2 line(s)" in done.stdout and "1 held-out item(s) excluded" in done.stdout
    lines = _lines(workdir / "ft.jsonl")
    assert lines[0] == {
        "messages": [
            {"role": "system", "content": "Answer with a code."},
            {"role": "user", "content": "alpha train"},
            {"role": "assistant", "content": "A"},
        ]
    }
    assert lines[1]["messages"][-1] == {"role": "assistant", "content": '{"code":"C"}'}  # type: ignore[index]


def test_default_is_the_serving_variant_over_the_policy_examples(workdir: Path) -> None:
    done = _export(workdir, "--out", "ft.jsonl")
    assert done.returncode == 0, done.stderr
    assert "wrote 1 line(s)" in done.stdout and "1 held-out item(s) excluded" in done.stdout
    (line,) = _lines(workdir / "ft.jsonl")
    assert line["messages"] == [
        {"role": "system", "content": "Route the input for everyone."},
        {"role": "user", "content": "alpha one"},
        {"role": "assistant", "content": "A"},
    ]


def test_an_unknown_variant_is_refused(workdir: Path) -> None:
    done = _export(workdir, "--variant", "nope", "--out", "ft.jsonl")
    assert done.returncode == 2 and "no variant 'nope'" in done.stderr


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant"),
        ({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}, "role"),
        ({"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "y"}]}, "non-empty"),
        ({"messages": [{"role": "assistant", "content": "y"}], "extra": 1}, "exactly one key"),
    ],
)
def test_the_format_check_names_the_problem(record: dict[str, object], problem: str) -> None:
    found = validate_line(record)
    assert found is not None and problem in found


def test_a_valid_line_passes() -> None:
    assert (
        validate_line({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}) is None
    )
