"""The console's templates (Jinja2, autoescaped) and its static files, loaded once at construction."""

from __future__ import annotations

import time
from importlib import resources

import jinja2

__all__ = ["STATIC_TYPES", "load_static", "template_environment"]

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_TEMPLATES = (
    "base.html",
    "login.html",
    "message.html",
    "policies.html",
    "policy.html",
    "playground.html",
    "evals.html",
    "eval_run.html",
    "stats.html",
)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "\u2013"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _seconds(value: float | None) -> str:
    if value is None:
        return "\u2013"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _usd(value: float | None) -> str:
    if value is None:
        return "\u2013"
    if value >= 1:
        return f"${value:,.2f}"
    return f"${value:.4f}" if value >= 0.01 or value == 0 else f"${value:.6f}"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def template_environment() -> jinja2.Environment:
    """Every template compiled now, so no request reads a template file."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, seconds=_seconds, usd=_usd, count=_count)
    for name in _TEMPLATES:
        env.get_template(name)
    return env


def load_static() -> dict[str, bytes]:
    """The static files by name."""
    folder = resources.files("gateway.console") / "static"
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and any(entry.name.endswith(suffix) for suffix in STATIC_TYPES)
    }
