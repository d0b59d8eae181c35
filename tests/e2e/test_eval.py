"""``prefit eval`` through the real pipeline: scores per variant, paired comparison, gates, cache, --url."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import GatewayProcess, free_port, write_files
from tests.fakes.upstream import FakeUpstream

DATASET = "\n".join(
    orjson.dumps({"id": f"t{i}", "input": f"ticket {i}", "expected": "billing" if i < 8 else "shipping"}).decode()
    for i in range(10)
)


def _files(upstream: FakeUpstream) -> dict[str, str]:
    return {
        "prefit.yaml": f"upstreams:\n  fake: {{base_url: {upstream.base_url}}}\ndefault_upstream: fake\n"
        "admin_keys: [eval-admin]\n",
        "policies/labeler.yaml": """
            upstream_model: fake-label
            few_shot: {examples: [{input: "refund please", output: billing}]}
            variants:
              - {name: few-shot, weight: 50}
              - {name: zero-shot, weight: 50, few_shot: null}
            eval:
              dataset: file:evals/labeler.jsonl
              metrics: [exact_match, contains]
              gates: {exact_match: ">=0.5"}
            """,
        "policies/evals/labeler.jsonl": DATASET,
    }


def _eval(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "eval", "labeler", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def workdir(tmp_path: Path, fake_upstream: FakeUpstream) -> Path:
    write_files(tmp_path, _files(fake_upstream))
    return tmp_path


def _calls(upstream: FakeUpstream) -> int:
    return len([r for r in upstream.requests if r.path == "/v1/chat/completions"])


def test_report_comparison_and_gates(workdir: Path, upstream: FakeUpstream) -> None:
    done = _eval(workdir, "--baseline", "zero-shot", "--json", "report.json")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "gate failed zero-shot: exact_match = 0.000, gate >=0.5" in done.stdout
    report = orjson.loads((workdir / "report.json").read_bytes())
    few, zero = report["variants"]["few-shot"], report["variants"]["zero-shot"]
    assert (few["n"], few["scores"]["exact_match"], zero["scores"]["exact_match"]) == (10, 0.8, 0.0)
    assert few["interval"][0] == pytest.approx(0.4902, abs=1e-3)
    assert few["interval"][1] == pytest.approx(0.9433, abs=1e-3)
    comparison = report["comparisons"][0]
    assert (comparison["better"], comparison["worse"]) == (8, 0)
    assert comparison["p_value"] == pytest.approx(2 / 2**8)
    assert report["passed"] is False
    item = next(i for i in few["items"] if i["id"] == "t9")
    assert (item["output"], item["expected"], item["scores"]["exact_match"]) == ("billing", "shipping", 0.0)
    assert _calls(upstream) == 20
    sent = [r for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert {len(r.body["messages"]) for r in sent} == {1, 3}


def test_cache_repeat_and_passing_gates(workdir: Path, upstream: FakeUpstream) -> None:
    assert _eval(workdir, "--variants", "few-shot").returncode == 0
    assert _calls(upstream) == 10
    again = _eval(workdir, "--variants", "few-shot", "--json", "again.json")
    assert again.returncode == 0
    assert orjson.loads((workdir / "again.json").read_bytes())["variants"]["few-shot"]["cached"] == 10
    assert _calls(upstream) == 10, "an unchanged variant costs nothing the second time"
    assert _eval(workdir, "--variants", "few-shot", "--no-cache").returncode == 0
    assert _calls(upstream) == 20
    assert _eval(workdir, "--variants", "few-shot", "--repeat", "2").returncode == 0
    assert _calls(upstream) == 30, "the second repeat must not share the first's cache entries"


def test_against_a_running_gateway(start_gateway, fake_upstream: FakeUpstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gateway: GatewayProcess = start_gateway(_files(fake_upstream))
    fake_upstream.reset()
    done = _eval(gateway.workdir, "--variants", "few-shot", "--url", gateway.url, "--key", "eval-admin", "--no-cache")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _calls(fake_upstream) == 10
    refused = _eval(gateway.workdir, "--variants", "few-shot", "--url", gateway.url, "--key", "nope", "--no-cache")
    assert refused.returncode != 0


def test_bad_dataset_is_a_clear_error(workdir: Path) -> None:
    (workdir / "policies/evals/labeler.jsonl").write_text('{"input": "x", "expected": "y"}\n{"input": "no expected"}\n')
    done = _eval(workdir)
    assert done.returncode == 2
    assert "labeler.jsonl:2: a record needs `input` and `expected`" in done.stderr


def test_save_stores_the_run_for_the_console(workdir: Path, upstream: FakeUpstream) -> None:
    done = _eval(workdir, "--variants", "few-shot", "--save")
    assert done.returncode == 0, done.stdout + done.stderr
    runs = list((workdir / ".prefit" / "eval-runs").glob("labeler-*.json"))
    assert len(runs) == 1
    saved = orjson.loads(runs[0].read_bytes())
    assert saved["policy"] == "labeler"
    assert saved["variants"]["few-shot"]["n"] == 10
    assert saved["saved_at"] > 0


def test_a_down_upstream_is_named_and_nothing_is_claimed_measured(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    files = _files(fake_upstream)
    port = free_port()
    files["prefit.yaml"] = files["prefit.yaml"].replace(fake_upstream.base_url, f"http://127.0.0.1:{port}/v1")
    write_files(tmp_path, files)
    done = _eval(tmp_path, "--baseline", "zero-shot", "--json", "report.json")
    assert done.returncode == 1, done.stdout + done.stderr
    shown = " ".join(done.stdout.split())  # rich wraps long lines
    assert f"connection refused by 127.0.0.1:{port}" in shown, "the cause, not only 'its circuit is open'"
    assert "not measured" in shown
    assert "[0.000," not in shown, "no interval for a variant where nothing was measured"
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    for variant in report["variants"].values():
        assert (variant["measured"], variant["errors"], variant["interval"]) == (0, 10, None)
        assert variant["scores"] == {"exact_match": None, "contains": None}
        assert (variant["p50_s"], variant["p95_s"]) == (None, None)
        assert f"connection refused by 127.0.0.1:{port}" in variant["first_error"]
    assert report["comparisons"] == [], "a comparison with nothing measured would count failures as wrong answers"


def test_cached_items_are_not_reported_as_measured_latency(workdir: Path, upstream: FakeUpstream) -> None:
    assert _eval(workdir, "--variants", "few-shot", "--json", "first.json").returncode == 0
    first = orjson.loads((workdir / "first.json").read_bytes())["variants"]["few-shot"]
    assert first["p50_s"] is not None and first["cached"] == 0
    again = _eval(workdir, "--variants", "few-shot", "--json", "again.json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "cached: 10" in again.stdout
    variant = orjson.loads((workdir / "again.json").read_bytes())["variants"]["few-shot"]
    assert (variant["cached"], variant["p50_s"], variant["p95_s"]) == (10, None, None)
    stored = {item["id"]: item["latency_s"] for item in first["items"]}
    for item in variant["items"]:
        assert item["cached"] is True
        assert item["latency_s"] is None, "a cached item made no call"
        assert item["cached_latency_s"] == stored[item["id"]]
