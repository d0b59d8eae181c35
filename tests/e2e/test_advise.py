"""``prefit advise``: verdicts on constructed stored runs, and the runs it makes when none are stored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.eval.signals import failure_kind
from gateway.eval.stats import wilson
from tests.conftest import write_files
from tests.fakes.upstream import FakeUpstream

POLICY = """\
upstream_model: fake-shown
few_shot:
  examples:
    - {input: "alpha shown", output: A}
    - {input: "beta shown", output: B}
variants:
  - {name: serving, weight: 100}
  - {name: bare, weight: 0, few_shot: null}
eval:
  dataset: file:evals/heldout.jsonl
"""
HELDOUT = [{"id": f"h{i}", "input": f"{kind} held {i}", "expected": kind[0].upper()} for i, kind in
           enumerate(["alpha", "beta"] * 10)]  # fmt: skip


def _jsonl(items: list[dict[str, Any]]) -> str:
    return "".join(orjson.dumps(item).decode() + "\n" for item in items)


@pytest.fixture
def workdir(tmp_path: Path, upstream: FakeUpstream) -> Path:
    write_files(
        tmp_path,
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {upstream.base_url}}}\ndefault_upstream: fake\n",
            "policies/router.yaml": POLICY,
            "policies/evals/heldout.jsonl": _jsonl(HELDOUT),
        },
    )
    return tmp_path


def _variant(right: int, n: int = 20, bad: int = 0, prompt_tokens: int = 100, latency: float = 0.1) -> dict[str, Any]:
    """A stored variant: ``right`` correct, ``bad`` empty answers, the rest the other known label."""
    items = []
    for i in range(n):
        expected = "AB"[i % 2]
        ok, empty = i < right, right <= i < right + bad
        output = expected if ok else ("" if empty else "BA"[i % 2])
        items.append(
            {
                "id": f"h{i}",
                "expected": expected,
                "output": output,
                "scores": {"exact_match": float(ok)},
                "error": None,
                "latency_s": latency,
                "cached_latency_s": None,
            }
        )
    return {
        "n": n,
        "measured": n,
        "scores": {"exact_match": right / n},
        "interval": list(wilson(right, n)),
        "prompt_tokens": prompt_tokens * n,
        "completion_tokens": n,
        "cost_usd": None,
        "items": items,
    }


def _store(workdir: Path, name: str, report: dict[str, Any]) -> None:
    folder = workdir / ".prefit/eval-runs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(orjson.dumps({"policy": "router", "saved_at": 1.0, **report}))


def _sweep(scores: list[int], labelled: int) -> dict[str, Any]:
    ks = [0, 2, 4, 8][: len(scores)]
    return {
        "sweep": "k",
        "ks": {f"k{k}": k for k in ks},
        "labelled": labelled,
        "variants": {f"k{k}": _variant(right) for k, right in zip(ks, scores, strict=True)},
    }


def _advise(workdir: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "advise", "router", "--json", "a.json"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done, orjson.loads((workdir / "a.json").read_bytes())


@pytest.mark.parametrize(
    ("variants", "sweep", "expected"),
    [
        # 2 of 20 empty answers from the best arm: 10%, the band prompting rarely closes.
        ({"serving": _variant(16, bad=2), "bare": _variant(4)}, _sweep([4, 10, 16], 20), "fine-tune-format"),
        # Flat from k=4 to k=8 at 0.60 with 500 labelled examples.
        ({"serving": _variant(12), "bare": _variant(4)}, _sweep([4, 10, 12, 12], 500), "fine-tune-capability"),
        # The same plateau with few labelled examples is no reason to train.
        ({"serving": _variant(12), "bare": _variant(4)}, _sweep([4, 10, 12, 12], 20), "keep-prompting"),
        # Only the example-heavy arm reaches its score, and its examples are most of its prompt.
        (
            {"serving": _variant(19, prompt_tokens=900), "bare": _variant(4, prompt_tokens=60)},
            _sweep([4, 10, 19], 20),
            "fine-tune-cost",
        ),
        # A lean arm tied with the best: prompting already has the cheap answer.
        (
            {"serving": _variant(19, prompt_tokens=900), "lean": _variant(18, prompt_tokens=80)},
            _sweep([4, 10, 19], 20),
            "keep-prompting",
        ),
    ],
)
def test_verdicts_on_stored_runs(
    workdir: Path, upstream: FakeUpstream, variants: dict[str, Any], sweep: dict[str, Any], expected: str
) -> None:
    _store(workdir, "router-1.json", {"variants": variants})
    _store(workdir, "router-ksweep-1.json", sweep)
    done, advice = _advise(workdir)
    assert advice["verdict"] == expected, done.stdout
    assert f"verdict: {expected}" in done.stdout
    assert {"format", "cost", "capability"} <= set(advice["signals"])
    assert [r for r in upstream.requests if r.path == "/v1/chat/completions"] == []


def test_cost_evidence_names_the_cheapest_tied_arm(workdir: Path) -> None:
    lean = {"serving": _variant(19, prompt_tokens=900), "lean": _variant(18, prompt_tokens=80)}
    _store(workdir, "router-1.json", {"variants": lean})
    _store(workdir, "router-ksweep-1.json", _sweep([4, 10, 19], 20))
    _, advice = _advise(workdir)
    assert advice["signals"]["cost"]["cheapest_tied"] == "lean"
    assert advice["signals"]["format"]["rate"] == 0.0


def test_missing_runs_are_made_stored_and_reused(workdir: Path, upstream: FakeUpstream) -> None:
    done, advice = _advise(workdir)
    assert "running one" in done.stdout
    points = advice["signals"]["capability"]["points"]
    assert [p["k"] for p in points] == [0, 2]
    assert [p["score"] for p in points] == [0.0, 1.0]
    assert advice["signals"]["format"]["variant"] == "serving"
    stored = sorted(p.name for p in (workdir / ".prefit/eval-runs").iterdir())
    assert len(stored) == 2 and any("ksweep" in name for name in stored)
    upstream.reset()
    again, second = _advise(workdir)
    assert "running one" not in again.stdout
    assert second["verdict"] == advice["verdict"]
    assert [r for r in upstream.requests if r.path == "/v1/chat/completions"] == []


@pytest.mark.parametrize(
    ("item", "kind"),
    [
        ({"error": "502: upstream", "output": "", "expected": "A"}, "error"),
        ({"output": "A", "expected": "A", "scores": {"m": 1.0}}, None),
        ({"output": "  ", "expected": "A"}, "format"),
        ({"output": "I'm sorry, I cannot help", "expected": "A"}, "format"),
        ({"output": "Z", "expected": "A"}, "format"),
        ({"output": "B", "expected": "A"}, "content"),
        ({"output": "{not json", "expected": {"a": 1}}, "format"),
        ({"output": '{"a": 2}', "expected": {"a": 1}}, "content"),
    ],
)
def test_failure_kinds(item: dict[str, Any], kind: str | None) -> None:
    assert failure_kind({"scores": {"m": 0.0}, **item}, {"a", "b"}, "m") == kind
