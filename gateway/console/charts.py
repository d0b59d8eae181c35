"""SVG charts drawn here, as markup safe to embed: interval bars for eval variants, sparklines.

Every label passes through ``markupsafe.escape``; numbers are formatted by this module. Charts use
presentation attributes and CSS classes only (no inline ``style``), so the console's Content
Security Policy holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["IntervalRow", "interval_chart", "sparkline"]

_ROW_H = 34
_LABEL_W = 170
_PLOT_W = 380
_VALUE_W = 150
_TOP = 26


@dataclass(frozen=True, slots=True)
class IntervalRow:
    label: str
    value: float
    low: float
    high: float


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


def interval_chart(rows: Sequence[IntervalRow], metric: str) -> Markup:
    """Horizontal bars on a 0..1 scale, each with its 95% interval as a whisker."""
    width = _LABEL_W + _PLOT_W + _VALUE_W
    height = _TOP + _ROW_H * len(rows) + 8
    x0 = _LABEL_W

    def x(value: float) -> float:
        return x0 + _clamp(value) * _PLOT_W

    parts = [
        f'<svg class="chart interval-chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(metric)} by variant with 95% intervals" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(metric)} by variant, 95% intervals</title>",
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        tx = x(tick)
        parts.append(f'<line class="grid" x1="{tx:.1f}" y1="{_TOP - 6}" x2="{tx:.1f}" y2="{height - 6}"/>')
        parts.append(f'<text class="tick" x="{tx:.1f}" y="{_TOP - 10}" text-anchor="middle">{tick:g}</text>')
    for i, row in enumerate(rows):
        top = _TOP + i * _ROW_H
        mid = top + _ROW_H / 2
        label = row.label if len(row.label) <= 22 else row.label[:21] + "\u2026"
        parts.append(
            f'<text class="label" x="{x0 - 8}" y="{mid + 4:.1f}" text-anchor="end">{escape(label)}'
            f"<title>{escape(row.label)}</title></text>"
        )
        parts.append(
            f'<rect class="bar" x="{x0}" y="{top + 8}" width="{x(row.value) - x0:.1f}" height="{_ROW_H - 16}" rx="2"/>'
        )
        lo, hi = x(row.low), x(row.high)
        parts.append(f'<line class="whisker" x1="{lo:.1f}" y1="{mid:.1f}" x2="{hi:.1f}" y2="{mid:.1f}"/>')
        for end in (lo, hi):
            parts.append(f'<line class="whisker" x1="{end:.1f}" y1="{mid - 7:.1f}" x2="{end:.1f}" y2="{mid + 7:.1f}"/>')
        parts.append(f'<circle class="point" cx="{x(row.value):.1f}" cy="{mid:.1f}" r="3.5"/>')
        parts.append(
            f'<text class="value" x="{x0 + _PLOT_W + 10}" y="{mid + 4:.1f}">'
            f"{row.value:.3f} [{row.low:.2f}, {row.high:.2f}]</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(values: Sequence[float], width: int = 140, height: int = 32, label: str = "trend") -> Markup:
    """A small line over the values (oldest first); a dash when there are fewer than two."""
    if len(values) < 2:
        return Markup('<span class="muted" title="not enough samples yet">\u2013</span>')
    top = max(values) or 1.0
    step = (width - 4) / (len(values) - 1)
    points = " ".join(f"{2 + i * step:.1f},{height - 3 - (v / top) * (height - 6):.1f}" for i, v in enumerate(values))
    last_x = 2 + (len(values) - 1) * step
    last_y = height - 3 - (values[-1] / top) * (height - 6)
    return Markup(
        f'<svg class="chart sparkline" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(label)}: max {top:.3g}</title>"
        f'<polyline class="spark" points="{points}"/>'
        f'<circle class="point" cx="{last_x:.1f}" cy="{last_y:.1f}" r="2.2"/></svg>'
    )
