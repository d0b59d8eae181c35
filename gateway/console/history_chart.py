"""The history chart: one variant's score per stored run with its 95% interval, prompt versions on the axis.

Drawn as SVG markup safe to embed, like ``charts``: every label is escaped, and styling is by CSS
class only, so the console's Content Security Policy holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["HistoryPoint", "history_chart"]

_LEFT = 44
_TOP = 14
_PLOT_H = 180
_AXIS_H = 46
_MIN_STEP = 56


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    label: str
    title: str
    score: float | None
    low: float | None
    high: float | None
    significant: bool = False


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


def history_chart(points: Sequence[HistoryPoint], metric: str) -> Markup:
    """Runs left to right (oldest first); a point and whisker per measured run, a line through them."""
    step = max(_MIN_STEP, 600 // max(1, len(points)))
    width = _LEFT + step * len(points) + 16
    height = _TOP + _PLOT_H + _AXIS_H

    def y(value: float) -> float:
        return _TOP + (1 - _clamp(value)) * _PLOT_H

    parts = [
        f'<svg class="chart history-chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(metric)} per run with 95% intervals" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(metric)} per run, 95% intervals</title>",
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        ty = y(tick)
        parts.append(f'<line class="grid" x1="{_LEFT}" y1="{ty:.1f}" x2="{width - 8}" y2="{ty:.1f}"/>')
        parts.append(f'<text class="tick" x="{_LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end">{tick:g}</text>')
    line: list[str] = []
    marks: list[str] = []
    for i, point in enumerate(points):
        x = _LEFT + step * i + step / 2
        label = point.label if len(point.label) <= 10 else point.label[:9] + "\u2026"
        parts.append(
            f'<text class="label axis" x="{x:.1f}" y="{_TOP + _PLOT_H + 18}" text-anchor="middle">{escape(label)}'
            f"<title>{escape(point.title)}</title></text>"
        )
        parts.append(f'<text class="tick" x="{x:.1f}" y="{_TOP + _PLOT_H + 34}" text-anchor="middle">#{i + 1}</text>')
        if point.score is None or point.low is None or point.high is None:
            continue
        lo, hi, mid = y(point.low), y(point.high), y(point.score)
        marks.append(f'<line class="whisker" x1="{x:.1f}" y1="{lo:.1f}" x2="{x:.1f}" y2="{hi:.1f}"/>')
        for end in (lo, hi):
            marks.append(f'<line class="whisker" x1="{x - 6:.1f}" y1="{end:.1f}" x2="{x + 6:.1f}" y2="{end:.1f}"/>')
        kind = "point significant" if point.significant else "point"
        marks.append(
            f'<circle class="{kind}" cx="{x:.1f}" cy="{mid:.1f}" r="4.5"><title>{escape(point.title)}: '
            f"{point.score:.3f} [{point.low:.2f}, {point.high:.2f}]</title></circle>"
        )
        line.append(f"{x:.1f},{mid:.1f}")
    if len(line) > 1:
        parts.append(f'<polyline class="trend" points="{" ".join(line)}"/>')
    parts.extend(marks)
    parts.append("</svg>")
    return Markup("".join(parts))
