"""Stored runs read back: history rows per variant with the paired test, and diffs between runs."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway.runs.diff import diff_runs
from gateway.runs.history import history
from gateway.runs.store import RunNotFound, list_runs, load_run, save_run


def _variant(outcomes: dict[str, bool], version: str = "v1") -> dict[str, object]:
    items = [
        {
            "id": i,
            "repeat": 0,
            "input": f"q {i}",
            "expected": "a",
            "output": "a" if ok else "b",
            "scores": {"exact_match": float(ok)},
            "error": None,
        }
        for i, ok in outcomes.items()
    ]
    score = sum(outcomes.values()) / len(outcomes)
    return {
        "n": len(items),
        "scores": {"exact_match": score},
        "interval": [0.0, 1.0],
        "items": items,
        "prompt_version": version,
        "content_hash": version * 8,
    }


def _save(folder: Path, run_id: str, variants: dict[str, dict[str, object]]) -> None:
    save_run(folder, {"policy": "p", "variants": variants, "dataset_hash": "d"}, run_id)


def test_history_compares_each_variant_with_its_own_previous_run(tmp_path: Path) -> None:
    ten = {f"i{k}": False for k in range(10)}
    _save(tmp_path, "p-1", {"a": _variant(ten), "b": _variant({**ten, "i0": True})})
    _save(tmp_path, "p-2", {"a": _variant({**ten, **{f"i{k}": True for k in range(7)}}, "v2")})
    _save(tmp_path, "p-3", {"b": _variant({"i0": False, "i1": True, "i99": True}, "v3")})
    (tmp_path / "broken.json").write_text("{not json")
    _save(tmp_path / "other", "q-1", {"a": _variant(ten)})
    rows = history(list_runs(tmp_path, "p"))
    assert [(r.run_id, r.variant, r.previous_run) for r in rows] == [
        ("p-1", "a", None),
        ("p-1", "b", None),
        ("p-2", "a", "p-1"),
        ("p-3", "b", "p-1"),
    ]
    a2, b3 = rows[2], rows[3]
    assert (a2.fixed, a2.broken, a2.shared, a2.significant) == (7, 0, 10, True)
    assert a2.p_value == pytest.approx(2 / 2**7) and a2.delta == pytest.approx(0.7)
    assert (b3.fixed, b3.broken, b3.shared, b3.significant) == (1, 1, 2, False), "only items both runs scored"
    assert b3.p_value == 1.0 and b3.prompt_version == "v3"


def test_diff_pairs_variants_and_refuses_runs_with_nothing_in_common(tmp_path: Path) -> None:
    _save(tmp_path, "p-1", {"zero": _variant({"i1": False, "i2": True, "i3": False})})
    _save(tmp_path, "p-2", {"few": _variant({"i1": True, "i2": False, "i3": False})})
    _save(tmp_path, "p-3", {"x": _variant({"i1": True}), "y": _variant({"i1": True})})
    (d,) = diff_runs(load_run("p-1", tmp_path), load_run(str(tmp_path / "p-2.json"), tmp_path))
    assert (d.before, d.after, d.shared) == ("zero", "few", 3)
    assert [(f.id, f.before, f.after) for f in d.fixed] == [("i1", "b", "a")]
    assert [(f.id, f.before, f.after) for f in d.broken] == [("i2", "a", "b")]
    with pytest.raises(ValueError, match="share no variant"):
        diff_runs(load_run("p-1", tmp_path), load_run("p-3", tmp_path))
    with pytest.raises(RunNotFound, match="no stored run 'p-9'"):
        load_run("p-9", tmp_path)
    (tmp_path / "junk.json").write_bytes(orjson.dumps({"policy": "p"}))
    with pytest.raises(RunNotFound, match="not a stored eval run"):
        load_run("junk", tmp_path)
