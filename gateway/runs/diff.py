"""``prefit diff``: the items that flipped between two stored runs, with both outputs.

Variants are paired by name; when the runs share no variant name but each holds one variant, those
two are compared (the usual case: one run per prompt edit). Items are paired by id and repeat.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from gateway.runs.store import StoredRun, item_passed

__all__ = ["Flip", "VariantDiff", "diff_json", "diff_runs", "render_diff"]


@dataclass(frozen=True, slots=True)
class Flip:
    id: str
    repeat: int
    input: Any
    expected: Any
    before: str
    after: str
    before_error: str | None
    after_error: str | None


@dataclass(frozen=True, slots=True)
class VariantDiff:
    before: str
    after: str
    shared: int
    fixed: list[Flip]
    broken: list[Flip]


def _pairs(a: StoredRun, b: StoredRun) -> list[tuple[str, str]]:
    common = [name for name in a.variants if name in b.variants]
    if common:
        return [(name, name) for name in common]
    if len(a.variants) == 1 and len(b.variants) == 1:
        return [(next(iter(a.variants)), next(iter(b.variants)))]
    return []


def _flip(old: dict[str, Any], new: dict[str, Any]) -> Flip:
    return Flip(
        str(new.get("id")),
        int(new.get("repeat") or 0),
        new.get("input"),
        new.get("expected"),
        str(old.get("output") or ""),
        str(new.get("output") or ""),
        old.get("error"),
        new.get("error"),
    )


def diff_runs(a: StoredRun, b: StoredRun) -> list[VariantDiff]:
    """Per paired variant, the items fixed (wrong in ``a``, right in ``b``) and broken (the reverse).

    Raises ``ValueError`` when the runs have no variant to pair.
    """
    pairs = _pairs(a, b)
    if not pairs:
        raise ValueError(f"{a.id} and {b.id} share no variant: {sorted(a.variants)} vs {sorted(b.variants)}")
    metric = b.metric
    out = []
    for before, after in pairs:
        old = {(str(i.get("id")), int(i.get("repeat") or 0)): i for i in a.items(before)}
        fixed, broken, shared = [], [], 0
        for item in b.items(after):
            previous = old.get((str(item.get("id")), int(item.get("repeat") or 0)))
            if previous is None:
                continue
            shared += 1
            was, now = item_passed(previous, metric), item_passed(item, metric)
            if now and not was:
                fixed.append(_flip(previous, item))
            elif was and not now:
                broken.append(_flip(previous, item))
        out.append(VariantDiff(before, after, shared, fixed, broken))
    return out


def diff_json(a: StoredRun, b: StoredRun, diffs: list[VariantDiff]) -> dict[str, Any]:
    return {"before": a.id, "after": b.id, "metric": b.metric, "variants": [asdict(d) for d in diffs]}


def _text(value: Any, limit: int = 80) -> str:
    if isinstance(value, list):  # a message list: its last user turn says what was asked
        value = next((m.get("content") for m in reversed(value) if isinstance(m, dict)), value)
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def render_diff(console: Console, a: StoredRun, b: StoredRun, diffs: list[VariantDiff]) -> None:
    for d in diffs:
        title = f"{a.id}:{d.before} \u2192 {b.id}:{d.after}: {len(d.fixed)} fixed, {len(d.broken)} broken"
        table = Table(title=f"{title} (of {d.shared} shared items)")
        for column in ("", "id", "input", "expected", "before", "after"):
            table.add_column(column)
        for label, flips in (("[green]fixed[/green]", d.fixed), ("[red]broken[/red]", d.broken)):
            for flip in flips:
                table.add_row(
                    label,
                    flip.id if not flip.repeat else f"{flip.id}#{flip.repeat}",
                    _text(flip.input),
                    _text(flip.expected, 40),
                    _text(flip.before_error or flip.before, 40),
                    _text(flip.after_error or flip.after, 40),
                )
        console.print(table)
