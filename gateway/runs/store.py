"""Where every ``prefit eval`` run is kept, so twenty to fifty iterations can be compared later.

A run is the report ``prefit eval --json`` writes plus ``run_id`` and ``saved_at``, stored as
``<eval_runs_dir>/<run id>.json``; the run id is ``<policy>-<UTC time>-<4 hex>``, so names sort by
time and two runs in one second do not collide. Readers take a run id or a path to a file. A file
that is not a run is skipped by ``list_runs`` and refused by ``load_run``. Blocking file I/O.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = ["RunNotFound", "StoredRun", "item_passed", "list_runs", "load_run", "new_run_id", "save_run"]


class RunNotFound(ValueError):
    """No stored run has that id, or the file is not a run."""


@dataclass(frozen=True, slots=True)
class StoredRun:
    """One stored run: its id, file and the report as saved."""

    id: str
    path: Path
    data: dict[str, Any]

    @property
    def policy(self) -> str:
        return str(self.data.get("policy", "?"))

    @property
    def saved_at(self) -> float:
        saved = self.data.get("saved_at")
        return float(saved) if isinstance(saved, int | float) else 0.0

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        raw = self.data.get("variants")
        return {str(k): v for k, v in raw.items() if isinstance(v, dict)} if isinstance(raw, dict) else {}

    @property
    def metric(self) -> str:
        """The primary metric: the first score of the first variant."""
        for variant in self.variants.values():
            scores = variant.get("scores")
            if isinstance(scores, dict) and scores:
                return str(next(iter(scores)))
        return "exact_match"

    def items(self, variant: str) -> list[dict[str, Any]]:
        """The variant's per-item results as saved (id, input, expected, output, scores, failure, ...)."""
        raw = self.variants.get(variant, {}).get("items")
        return [item for item in raw if isinstance(item, dict)] if isinstance(raw, list) else []


def item_passed(item: dict[str, Any], metric: str) -> bool:
    """Whether a saved item passed: no error and the primary score at least 0.5."""
    scores = item.get("scores")
    value = scores.get(metric) if isinstance(scores, dict) else None
    return item.get("error") is None and isinstance(value, int | float) and value >= 0.5


def new_run_id(policy: str) -> str:
    return f"{policy}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(2)}"


def save_run(folder: Path, report: dict[str, Any], run_id: str | None = None) -> Path:
    """Write ``report`` as a run; returns the file. ``folder`` is created when missing."""
    folder.mkdir(parents=True, exist_ok=True)
    run_id = run_id or new_run_id(str(report["policy"]))
    path = folder / f"{run_id}.json"
    record = {**report, "run_id": run_id, "saved_at": time.time()}
    path.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    return path


def _read(path: Path) -> StoredRun | None:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("variants"), dict):
        return None
    if data.get("sweep"):  # a k-sweep `prefit advise` stored: evidence, not an iteration of the policy
        return None
    return StoredRun(str(data.get("run_id") or path.stem), path, data)


def list_runs(folder: Path, policy: str | None = None) -> list[StoredRun]:
    """Every readable run in ``folder`` (of ``policy`` when given), oldest first."""
    try:
        paths = [p for p in folder.iterdir() if p.suffix == ".json" and p.is_file()]
    except OSError:
        return []
    runs = [run for run in map(_read, paths) if run is not None and (policy is None or run.policy == policy)]
    runs.sort(key=lambda run: (run.saved_at, run.id))
    return runs


def load_run(ref: str, folder: Path) -> StoredRun:
    """A run by id (in ``folder``) or by path. Raises ``RunNotFound``."""
    candidates = [Path(ref), folder / f"{ref}.json", folder / ref]
    for path in candidates:
        if path.is_file():
            run = _read(path)
            if run is None:
                raise RunNotFound(f"{path}: not a stored eval run")
            return run
    raise RunNotFound(f"no stored run {ref!r} (looked in {folder}; `prefit history POLICY` lists the ids)")
