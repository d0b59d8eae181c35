"""``prefit history``: a policy's trajectory over its stored runs, one row per run and variant.

Each row carries the change against the previous run of the same variant and whether that change
is significant: an exact McNemar test on the items both runs scored (paired by item id and repeat),
so "the new prompt fixed 9 and broke 1" is told apart from noise on twenty items.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from rich.console import Console
from rich.table import Table

from gateway.runs.stats import mcnemar_exact
from gateway.runs.store import StoredRun, item_passed

__all__ = ["SIGNIFICANCE", "HistoryRow", "history", "history_json", "paired", "render_history"]

SIGNIFICANCE = 0.05


@dataclass(frozen=True, slots=True)
class HistoryRow:
    run_id: str
    time: float
    variant: str
    prompt_version: str
    content_hash: str
    dataset_hash: str
    n: int
    metric: str
    score: float | None
    low: float | None
    high: float | None
    #: Against the previous run of this variant; None for its first run.
    previous_run: str | None = None
    delta: float | None = None
    fixed: int = 0
    broken: int = 0
    shared: int = 0
    p_value: float | None = None
    significant: bool = False


def _outcomes(run: StoredRun, variant: str, metric: str) -> dict[tuple[str, int], bool]:
    return {(str(i.get("id")), int(i.get("repeat") or 0)): item_passed(i, metric) for i in run.items(variant)}


def paired(before: StoredRun, after: StoredRun, variant_before: str, variant_after: str) -> tuple[int, int, int]:
    """(fixed, broken, shared): items wrong before and right after, the reverse, and items in both."""
    metric = after.metric
    old = _outcomes(before, variant_before, metric)
    new = _outcomes(after, variant_after, metric)
    shared = old.keys() & new.keys()
    fixed = sum(1 for key in shared if new[key] and not old[key])
    broken = sum(1 for key in shared if old[key] and not new[key])
    return fixed, broken, len(shared)


def _row(
    run: StoredRun, variant: str, data: dict[str, Any], previous: tuple[StoredRun, HistoryRow] | None
) -> HistoryRow:
    metric = run.metric
    scores = data.get("scores") if isinstance(data.get("scores"), dict) else {}
    score = scores.get(metric) if isinstance(scores, dict) else None
    interval = data.get("interval")
    low, high = (interval[0], interval[1]) if isinstance(interval, list) and len(interval) == 2 else (None, None)
    row = HistoryRow(
        run.id,
        run.saved_at,
        variant,
        str(data.get("prompt_version") or "none"),
        str(data.get("content_hash") or ""),
        str(run.data.get("dataset_hash") or ""),
        int(data.get("n") or 0),
        metric,
        score if isinstance(score, int | float) else None,
        low,
        high,
    )
    if previous is None:
        return row
    before, last = previous
    fixed, broken, shared = paired(before, run, variant, variant)
    p_value = mcnemar_exact(fixed, broken)
    delta = None if row.score is None or last.score is None else row.score - last.score
    return replace(
        row,
        previous_run=last.run_id,
        delta=delta,
        fixed=fixed,
        broken=broken,
        shared=shared,
        p_value=p_value,
        significant=p_value < SIGNIFICANCE,
    )


def history(runs: list[StoredRun]) -> list[HistoryRow]:
    """Rows for ``runs`` (oldest first), each compared with the previous run of its variant."""
    last: dict[str, tuple[StoredRun, HistoryRow]] = {}
    rows = []
    for run in runs:
        for variant, data in run.variants.items():
            row = _row(run, variant, data, last.get(variant))
            last[variant] = (run, row)
            rows.append(row)
    return rows


def history_json(policy: str, rows: list[HistoryRow]) -> dict[str, Any]:
    return {"policy": policy, "significance": SIGNIFICANCE, "runs": [asdict(row) for row in rows]}


def _score(row: HistoryRow) -> str:
    if row.score is None or row.low is None or row.high is None:
        return "not measured"
    return f"{row.score:.3f} [{row.low:.3f}, {row.high:.3f}]"


def _change(row: HistoryRow) -> str:
    if row.previous_run is None:
        return "first run"
    delta = "-" if row.delta is None else f"{row.delta:+.3f}"
    return f"{delta} (+{row.fixed} fixed, -{row.broken} broken of {row.shared})"


def _significance(row: HistoryRow) -> str:
    if row.p_value is None:
        return ""
    verdict = "[green]significant[/green]" if row.significant else "not significant"
    return f"p = {row.p_value:.4f} {verdict}"


def render_history(console: Console, policy: str, rows: list[HistoryRow]) -> None:
    table = Table(title=f"prefit history: {policy}")
    for column in ("run", "time (UTC)", "variant", "prompt", "content", "n", "score (95% CI)", "change", "paired"):
        table.add_column(column, justify="right" if column in ("n",) else "left")
    for row in rows:
        table.add_row(
            row.run_id,
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row.time)),
            row.variant,
            row.prompt_version,
            row.content_hash[:10],
            str(row.n),
            _score(row),
            _change(row),
            _significance(row),
        )
    console.print(table if rows else f"no stored runs of {policy!r}")
