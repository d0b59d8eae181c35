"""The error-analysis part of the ``prefit eval`` report as rich tables: failures, slices, confusion, clusters."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["render_analysis"]

_MAX_CLUSTERS = 8


def _short(value: Any, limit: int = 60) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _failures(console: Console, analyses: dict[str, dict[str, Any]]) -> None:
    table = Table(title="failures by kind")
    for column in ("variant", "format", "content", "error"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for variant, analysis in analyses.items():
        counts = analysis["failures"]
        table.add_row(variant, str(counts["format"]), str(counts["content"]), str(counts["error"]))
    console.print(table)


def _slices(console: Console, variant: str, slices: dict[str, dict[str, dict[str, float]]]) -> None:
    for field, values in slices.items():
        table = Table(title=f"{variant} by {field}")
        for column in (field, "n", "score (95% CI)"):
            table.add_column(column, justify="left" if column == field else "right")
        for value, row in values.items():
            table.add_row(value, str(int(row["n"])), f"{row['score']:.3f} [{row['low']:.3f}, {row['high']:.3f}]")
        console.print(table)


def _confusion(console: Console, variant: str, matrix: dict[str, dict[str, int]]) -> None:
    labels = list(matrix)
    columns = labels + sorted({c for row in matrix.values() for c in row} - set(labels))
    table = Table(title=f"{variant}: expected (rows) against output (columns)")
    table.add_column("expected")
    for column in columns:
        table.add_column(_short(column, 20), justify="right")
    for label, row in matrix.items():
        table.add_row(label, *[str(row.get(c, 0)) if row.get(c) else "." for c in columns])
    console.print(table)


def _clusters(console: Console, variant: str, clusters: list[dict[str, Any]]) -> None:
    table = Table(title=f"{variant}: failing items by similarity")
    for column in ("size", "items", "example input", "expected", "output"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for cluster in clusters[:_MAX_CLUSTERS]:
        example = cluster["example"]
        input_text = example["input"] if isinstance(example["input"], str) else example["input"][-1].get("content")
        table.add_row(
            str(cluster["size"]),
            _short(", ".join(cluster["items"]), 40),
            _short(input_text),
            _short(example["expected"], 20),
            _short(example["output"], 30),
        )
    if len(clusters) > _MAX_CLUSTERS:
        table.caption = f"{len(clusters) - _MAX_CLUSTERS} smaller group(s) in --json"
    console.print(table)


def render_analysis(console: Console, analyses: dict[str, dict[str, Any]]) -> None:
    """Print the analysis of each variant (``{variant: {slices, confusion, failures, clusters}}``)."""
    if not analyses:
        return
    _failures(console, analyses)
    for variant, analysis in analyses.items():
        _slices(console, variant, analysis["slices"])
        if analysis["confusion"] is not None:
            _confusion(console, variant, analysis["confusion"])
        if analysis["clusters"]:
            _clusters(console, variant, analysis["clusters"])
