"""``prefit eval`` measures retrieval: recall@k and MRR per variant from the items' expected_sources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.conftest import write_files
from tests.fakes.upstream import FakeUpstream

DATA = Path(__file__).resolve().parents[1] / "data"
ITEMS = [
    ("How long do I have to return an item?", ["returns.md"]),
    ("How much does express delivery cost?", ["shipping.md"]),
    ("How long is a gift card valid?", ["gift-cards.txt"]),
    ("Can I pay in instalments?", ["payments.md"]),
    ("What does error E-4012 mean?", ["error-codes.md"]),
    ("Do you sell part PX-220?", ["parts.md", "nowhere.md"]),
    ("Hello there", []),  # names no source: not counted
]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_each_variant_reports_recall_and_mrr(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    dataset = "\n".join(
        orjson.dumps({"id": f"q{i}", "input": q, "expected": "x", "expected_sources": s}).decode()
        for i, (q, s) in enumerate(ITEMS)
    )
    write_files(
        tmp_path,
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {fake_upstream.base_url}}}\ndefault_upstream: fake\n",
            "policies/kb.yaml": """
                upstream_model: fake-kb
                retrieval: {collection: kb, top_k: 4}
                variants:
                  - {name: four, weight: 50}
                  - {name: one, weight: 50, retrieval: {top_k: 1, mode: dense}}
                eval: {dataset: "file:evals/kb.jsonl", metrics: [contains]}
                """,
            "policies/evals/kb.jsonl": dataset,
        },
    )
    for folder in ("corpus", "hybrid"):
        done = _run(["ingest", "kb", str(DATA / folder)], tmp_path)
        assert done.returncode == 0, done.stderr

    done = _run(["eval", "kb", "--json", "report.json", "--no-cache"], tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    variants = orjson.loads((tmp_path / "report.json").read_bytes())["variants"]
    four, one = variants["four"]["retrieval"], variants["one"]["retrieval"]
    assert (four["k"], four["n"], one["k"], one["n"]) == (4, 6, 1, 6)
    assert four["recall_at_k"] == (5 + 0.5) / 6, "every named source found, but nowhere.md"
    assert 0 < one["recall_at_k"] <= four["recall_at_k"]
    assert 0 < one["mrr"] <= four["mrr"] <= 1
    assert "four retrieval: recall@4 0.917" in done.stdout
    item = variants["four"]["items"][0]
    assert item["retrieved"] and item["retrieved"][0]["source"].endswith("returns.md")
