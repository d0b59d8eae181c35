"""``prefit optimize`` through the real pipeline, over a fake model that learns only from the examples
it is shown (``fake-shown``): the search must find a set covering every kind of input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import write_files
from tests.fakes.upstream import FakeUpstream

KINDS = {"alpha": "A", "beta": "B", "gamma": "C"}


def _items(prefix: str, count: int, kinds: dict[str, str] = KINDS) -> list[dict[str, object]]:
    return [
        {"id": f"{prefix}-{kind}-{i}", "input": f"{kind} {prefix} case {i}", "expected": label}
        for kind, label in kinds.items()
        for i in range(count)
    ]


def _jsonl(items: list[dict[str, object]]) -> str:
    return "".join(orjson.dumps(item).decode() + "\n" for item in items)


POLICY = """\
# The router: hand-written examples show one kind only.
upstream_model: fake-shown
prompt: {system: "Route the input."}
few_shot:
  examples:
    - {input: "alpha shown example", output: A}  # the only hand-written example
variants:
  - {name: serving, weight: 100}
eval:
  dataset: file:evals/heldout.jsonl
  metrics: [exact_match]
"""


@pytest.fixture
def workdir(tmp_path: Path, upstream: FakeUpstream) -> Path:
    write_files(
        tmp_path,
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {upstream.base_url}}}\ndefault_upstream: fake\n",
            "policies/router.yaml": POLICY,
            "policies/evals/heldout.jsonl": _jsonl(_items("held", 4)),
            "train.jsonl": _jsonl(_items("train", 5)),
        },
    )
    return tmp_path


def _prefit(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=workdir, capture_output=True, text=True, timeout=300
    )


def test_finds_the_better_set_and_writes_a_variant_check_accepts(workdir: Path) -> None:
    done = _prefit(workdir, "optimize", "router", "--train", "train.jsonl", "--budget", "60", "--json", "r.json")
    assert done.returncode == 0, done.stderr + done.stdout
    report = orjson.loads((workdir / "r.json").read_bytes())
    assert report["baseline"]["variant"] == "serving"
    assert report["baseline"]["heldout_score"] == pytest.approx(1 / 3)
    winner = report["winner"]
    assert winner["heldout_score"] == 1.0
    assert {example["output"] for example in winner["examples"]} == {"A", "B", "C"}
    assert winner["k"] == len(winner["examples"])
    assert report["p_value"] < 0.01
    assert report["calls"] <= 60
    assert all("held" not in str(example["input"]) for example in winner["examples"])

    written = _prefit(workdir, "optimize", "router", "--train", "train.jsonl", "--budget", "60", "--write")
    assert written.returncode == 0, written.stderr + written.stdout
    text = (workdir / "policies/router.yaml").read_text()
    added = [line for line in text.splitlines(keepends=True) if "name: optimized" in line]
    assert len(added) == 1
    assert text.replace(added[0], "") == POLICY  # comments, quotes and layout untouched
    assert (workdir / "policies/router-optimized.jsonl").is_file()
    check = _prefit(workdir, "check")
    assert check.returncode == 0, check.stderr
    assert "optimized" in check.stdout
    evaluated = _prefit(workdir, "eval", "router", "--variants", "optimized", "--json", "e.json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert orjson.loads((workdir / "e.json").read_bytes())["variants"]["optimized"]["scores"]["exact_match"] == 1.0


def test_a_rerun_with_the_same_seed_is_free_and_the_same(workdir: Path, upstream: FakeUpstream) -> None:
    first = _prefit(workdir, "optimize", "router", "--train", "train.jsonl", "--budget", "40", "--json", "a.json")
    assert first.returncode == 0, first.stderr
    upstream.reset()
    second = _prefit(workdir, "optimize", "router", "--train", "train.jsonl", "--budget", "40", "--json", "b.json")
    assert second.returncode == 0, second.stderr
    assert [r for r in upstream.requests if r.path == "/v1/chat/completions"] == []
    a, b = (orjson.loads((workdir / name).read_bytes()) for name in ("a.json", "b.json"))
    assert a["winner"] == b["winner"] and a["candidates"] == b["candidates"]


def test_overlap_with_the_held_out_set_is_refused_by_name(workdir: Path) -> None:
    train = [*_items("train", 3), {"id": "sneaky", "input": "beta held case 2", "expected": "B"}]
    train.append({"id": "held-alpha-0", "input": "something new", "expected": "A"})
    (workdir / "train.jsonl").write_text(_jsonl(train))
    done = _prefit(workdir, "optimize", "router", "--train", "train.jsonl")
    assert done.returncode == 2
    assert "sneaky" in done.stderr and "held-alpha-0" in done.stderr


@pytest.mark.parametrize(
    ("train", "budget", "message"),
    [
        ("", "50", "no records"),
        (_jsonl(_items("train", 1)), "50", "at least 6 are needed"),
        (_jsonl(_items("train", 5)), "0", "--budget must be at least 1"),
        (_jsonl(_items("train", 5)), "12", "below one bootstrap"),
    ],
)
def test_bad_input_is_refused_clearly(workdir: Path, train: str, budget: str, message: str) -> None:
    (workdir / "train.jsonl").write_text(train)
    done = _prefit(workdir, "optimize", "router", "--train", "train.jsonl", "--budget", budget)
    assert done.returncode == 2
    assert message in done.stderr


def test_a_different_label_set_is_warned_about(workdir: Path) -> None:
    (workdir / "train.jsonl").write_text(_jsonl(_items("train", 4, {"alpha": "A", "beta": "B", "delta": "D"})))
    done = _prefit(workdir, "optimize", "router", "--train", "train.jsonl", "--budget", "30")
    assert "training labels ['A', 'B', 'D'] differ from held-out labels ['A', 'B', 'C']" in done.stdout


def test_an_upstream_failing_halfway_stops_with_what_it_has(workdir: Path) -> None:
    (workdir / "train.jsonl").write_text(_jsonl(_items("train", 4, {"alpha": "A", "crash": "X", "beta": "B"})))
    done = _prefit(workdir, "optimize", "router", "--train", "train.jsonl", "--budget", "60", "--json", "r.json")
    assert done.returncode == 1
    report = orjson.loads((workdir / "r.json").read_bytes())
    assert "upstream failed during candidate" in report["stopped"]
    assert "stopped" in done.stdout
    assert report["candidates"][0]["name"] == "serving"
    assert report["winner"] is None or report["winner"]["heldout_score"] is None


def test_proposed_system_prompts_are_tried_on_the_dev_split(workdir: Path, upstream: FakeUpstream) -> None:
    # `mute` inputs never get an answer, so the best example set always leaves dev failures to show.
    (workdir / "train.jsonl").write_text(_jsonl(_items("train", 5, {**KINDS, "mute": "M"})))
    (workdir / "policies/proposer.yaml").write_text("upstream_model: gpt-4o-mini\n")
    args = ["--train", "train.jsonl", "--budget", "80", "--propose", "proposer", "--json", "r.json"]
    done = _prefit(workdir, "optimize", "router", *args)
    assert done.returncode == 0, done.stderr + done.stdout
    report = orjson.loads((workdir / "r.json").read_bytes())
    rewrites = [c for c in report["candidates"] if c["system"] is not None]
    assert len(rewrites) == 2
    assert all(c["system"].startswith("echo: You improve the system prompt") for c in rewrites)
    asks = [r.body for r in upstream.requests if r.body and r.body.get("model") == "gpt-4o-mini"]
    assert asks and "expected: M" in asks[0]["messages"][-1]["content"]
    assert "Route the input." in asks[0]["messages"][-1]["content"]


def test_a_policy_without_a_held_out_set_is_refused(workdir: Path) -> None:
    (workdir / "policies/router.yaml").write_text(POLICY.split("eval:")[0])
    done = _prefit(workdir, "optimize", "router", "--train", "train.jsonl")
    assert done.returncode == 2
    assert "has no `eval.dataset`" in done.stderr and "Traceback" not in done.stderr
