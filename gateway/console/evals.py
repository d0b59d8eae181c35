"""Saved ``prefit eval --save`` runs: find them, read them, shape them for the pages.

Runs are JSON files named ``<policy>-<UTC stamp>.json`` in the settings' ``eval_runs_dir``
(relative to the settings file's directory). A file that is not a readable run is listed as
broken, never fatal. Blocking reads: call these from a worker thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.config.load import Config
from gateway.console.charts import IntervalRow

__all__ = ["RunSummary", "RunView", "VariantRow", "list_runs", "load_run", "runs_dir"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.json$")
_MAX_LISTED = 200
_MAX_FAILED_ITEMS = 50


def runs_dir(config: Config) -> Path:
    folder = Path(config.settings.eval_runs_dir)
    return folder if folder.is_absolute() else config.base_dir / folder


@dataclass(slots=True)
class RunSummary:
    name: str
    policy: str
    saved_at: float | None
    passed: bool | None
    variants: list[str]
    dataset: str
    broken: bool = False


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("variants"), dict) else None


def list_runs(folder: Path) -> list[RunSummary]:
    """The newest runs first (by file time), at most a fixed number."""
    try:
        files = [p for p in folder.iterdir() if p.is_file() and _NAME.match(p.name)]
    except OSError:
        return []
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    out = []
    for path in files[:_MAX_LISTED]:
        data = _read(path)
        if data is None:
            out.append(RunSummary(path.name, "?", None, None, [], "", broken=True))
            continue
        saved = data.get("saved_at")
        out.append(
            RunSummary(
                path.name,
                str(data.get("policy", "?")),
                float(saved) if isinstance(saved, int | float) else path.stat().st_mtime,
                data.get("passed") if isinstance(data.get("passed"), bool) else None,
                [str(v) for v in data["variants"]],
                str(data.get("dataset", "")),
            )
        )
    return out


def _num(value: object, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


@dataclass(slots=True)
class VariantRow:
    name: str
    n: int
    primary: float
    low: float
    high: float
    scores: dict[str, float]
    p50_s: float
    p95_s: float
    prompt_tokens: int
    completion_tokens: int
    errors: int
    cached: int
    cost_usd: float | None
    failed_items: list[dict[str, Any]] = field(default_factory=list)
    prompt_version: str = ""
    #: The error analysis as stored (see docs/eval-report.md); empty for runs saved before it existed.
    failures: dict[str, int] = field(default_factory=dict)
    slices: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] | None = None
    clusters: list[dict[str, Any]] = field(default_factory=list)
    #: A chain's items with every step's output (and step scores), for the per-step table.
    step_items: list[dict[str, Any]] = field(default_factory=list)
    step_names: list[str] = field(default_factory=list)
    step_scores: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def confusion_columns(self) -> list[str]:
        """The labels first, then any other outputs seen."""
        matrix = self.confusion or {}
        labels = list(matrix)
        return labels + sorted({c for row in matrix.values() for c in row} - set(labels))

    @property
    def cost_per_item(self) -> float | None:
        return self.cost_usd / self.n if self.cost_usd is not None and self.n else None


@dataclass(slots=True)
class RunView:
    name: str
    policy: str
    dataset: str
    saved_at: float | None
    passed: bool | None
    metrics: list[str]
    variants: list[VariantRow]
    comparisons: list[dict[str, Any]]
    gate_failures: list[str]
    has_cost: bool

    @property
    def chart_rows(self) -> list[IntervalRow]:
        return [IntervalRow(v.name, v.primary, v.low, v.high) for v in self.variants]


def _variant(name: str, data: dict[str, Any], metrics: list[str]) -> VariantRow:
    scores_raw = data.get("scores")
    scores = {str(k): _num(v) for k, v in scores_raw.items()} if isinstance(scores_raw, dict) else {}
    interval = data.get("interval")
    low, high = (
        (_num(interval[0]), _num(interval[1], 1.0)) if isinstance(interval, list) and len(interval) == 2 else (0.0, 1.0)
    )
    primary = metrics[0] if metrics else ""
    cost = data.get("cost_usd")
    items_raw = data.get("items")
    items: list[Any] = items_raw if isinstance(items_raw, list) else []
    failed = [
        item
        for item in items
        if isinstance(item, dict) and (item.get("error") or _num((item.get("scores") or {}).get(primary), 1.0) < 0.5)
    ]
    return VariantRow(
        name=name,
        n=int(_num(data.get("n"))),
        primary=scores.get(primary, 0.0),
        low=low,
        high=high,
        scores=scores,
        p50_s=_num(data.get("p50_s")),
        p95_s=_num(data.get("p95_s")),
        prompt_tokens=int(_num(data.get("prompt_tokens"))),
        completion_tokens=int(_num(data.get("completion_tokens"))),
        errors=int(_num(data.get("errors"))),
        cached=int(_num(data.get("cached"))),
        cost_usd=_num(cost) if isinstance(cost, int | float) else None,
        failed_items=failed[:_MAX_FAILED_ITEMS],
        prompt_version=str(data.get("prompt_version") or ""),
        **_analysis(data),
        **_steps(data, items),
    )


def _steps(data: dict[str, Any], items: list[Any]) -> dict[str, Any]:
    """What a chain's steps said for each item (``steps`` per item), the step names in first-seen
    order, and the per-step scores; empty for runs of single prompts."""
    with_steps = [i for i in items if isinstance(i, dict) and isinstance(i.get("steps"), dict) and i["steps"]]
    if not with_steps:
        return {}
    names: list[str] = []
    for item in with_steps:
        names.extend(name for name in item["steps"] if name not in names)
    scores = data.get("step_scores")
    return {
        "step_items": with_steps[:_MAX_FAILED_ITEMS],
        "step_names": names,
        "step_scores": scores if isinstance(scores, dict) else {},
    }


def _analysis(data: dict[str, Any]) -> dict[str, Any]:
    """The stored analysis fields, each dropped when it is not of the documented shape."""
    out: dict[str, Any] = {}
    failures, slices, matrix, clusters = (data.get(k) for k in ("failures", "slices", "confusion", "clusters"))
    if isinstance(failures, dict):
        out["failures"] = {str(k): int(_num(v)) for k, v in failures.items()}
    if isinstance(slices, dict) and all(isinstance(v, dict) for v in slices.values()):
        out["slices"] = slices
    if isinstance(matrix, dict) and all(isinstance(v, dict) for v in matrix.values()):
        out["confusion"] = matrix
    if isinstance(clusters, list):
        out["clusters"] = [c for c in clusters if isinstance(c, dict) and isinstance(c.get("example"), dict)]
    return out


def load_run(folder: Path, name: str) -> RunView | None:
    """One run by file name; None when the name is not a run file here or it cannot be read."""
    if not _NAME.match(name):
        return None
    data = _read(folder / name)
    if data is None:
        return None
    variants_raw: dict[str, Any] = data["variants"]
    metrics: list[str] = []
    for value in variants_raw.values():
        if isinstance(value, dict) and isinstance(value.get("scores"), dict):
            metrics = [str(m) for m in value["scores"]]
            break
    variants = [_variant(str(k), v, metrics) for k, v in variants_raw.items() if isinstance(v, dict)]
    comparisons = [c for c in data.get("comparisons") or [] if isinstance(c, dict)]
    failures = [str(f) for f in data.get("gate_failures") or []]
    saved = data.get("saved_at")
    return RunView(
        name=name,
        policy=str(data.get("policy", "?")),
        dataset=str(data.get("dataset", "")),
        saved_at=float(saved) if isinstance(saved, int | float) else None,
        passed=data.get("passed") if isinstance(data.get("passed"), bool) else None,
        metrics=metrics,
        variants=variants,
        comparisons=comparisons,
        gate_failures=failures,
        has_cost=any(v.cost_usd is not None for v in variants),
    )
