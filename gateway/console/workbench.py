"""The iteration loop in the console: a policy's history per variant, and the items two runs flipped.

Built on ``gateway.runs`` (the same rows and flips ``prefit history`` and ``prefit diff`` print).
Run references from the page are run ids only, looked up in the runs folder: never a path.
Blocking reads: call these from a worker thread.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup

from gateway.console.history_chart import HistoryPoint, history_chart
from gateway.runs.diff import VariantDiff, diff_runs
from gateway.runs.history import HistoryRow, history
from gateway.runs.store import RunNotFound, StoredRun, list_runs, load_run

__all__ = ["DiffView", "HistoryView", "VariantHistory", "diff_view", "history_view"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


@dataclass(slots=True)
class VariantHistory:
    name: str
    rows: list[HistoryRow]
    chart: Markup


@dataclass(slots=True)
class HistoryView:
    policy: str
    metric: str
    variants: list[VariantHistory]
    run_ids: list[str]


def _point(row: HistoryRow) -> HistoryPoint:
    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(row.time))
    title = f"{row.run_id} ({stamp}), prompt {row.prompt_version}, content {row.content_hash[:10]}"
    return HistoryPoint(row.prompt_version, title, row.score, row.low, row.high, row.significant)


def history_view(folder: Path, policy: str) -> HistoryView:
    runs = list_runs(folder, policy)
    rows = history(runs)
    metric = runs[-1].metric if runs else "score"
    names = list(dict.fromkeys(row.variant for row in rows))
    variants = []
    for name in names:
        mine = [row for row in rows if row.variant == name]
        variants.append(VariantHistory(name, mine, history_chart([_point(r) for r in mine], metric)))
    return HistoryView(policy, metric, variants, [run.id for run in reversed(runs)])


@dataclass(slots=True)
class DiffView:
    before: StoredRun
    after: StoredRun
    variants: list[VariantDiff]


def _run(folder: Path, ref: str) -> StoredRun:
    if not _RUN_ID.match(ref):
        raise RunNotFound(f"{ref!r} is not a run id")
    return load_run(str(folder / f"{ref}.json"), folder)


def diff_view(folder: Path, before: str, after: str) -> DiffView | str:
    """The flips from ``before`` to ``after`` (run ids), or a sentence saying why there are none."""
    try:
        a, b = _run(folder, before), _run(folder, after)
        return DiffView(a, b, diff_runs(a, b))
    except ValueError as exc:
        return str(exc).replace(str(folder), "the runs folder")
