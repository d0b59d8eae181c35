"""Turn benchmark runs into figures, the gateway's added cost, target verdicts and rich tables.

Runs are repeated (``--repeat``) because the machine may be shared: each figure is the median over
repeats of the same target and concurrency, and every run keeps how much of the gateway's core
other processes used meanwhile, so a disturbed run can be seen for what it is.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadgen import LoadResult
from profiling import CpuShare, top_functions
from rich.table import Table

__all__ = [
    "TARGET_ADDED_P50_MS",
    "TARGET_RPS_C32",
    "Measurement",
    "Summary",
    "comparison",
    "cost_table",
    "figures_table",
    "foreign_load_warning",
    "machine_info",
    "profile_table",
    "summarize",
    "verdict_table",
    "verdicts",
]

TARGET_ADDED_P50_MS = 0.5
TARGET_RPS_C32 = 3000.0
_PACKAGES = ("prefit", "aiohttp", "starlette", "uvicorn", "uvloop", "httptools", "orjson", "pydantic")


@dataclass(frozen=True, slots=True)
class Measurement:
    """One run: the target ("direct" or "prefit"), what the load generator saw, and the gateway's CPU."""

    target: str
    repeat: int
    result: LoadResult
    gateway_cpu: CpuShare | None = None
    foreign_load: float | None = None
    profile: Path | None = None

    def as_dict(self, profile_top: int) -> dict[str, Any]:
        entry: dict[str, Any] = {"target": self.target, "repeat": self.repeat, **self.result.as_dict()}
        if self.gateway_cpu is not None:
            entry["gateway_cpu"] = self.gateway_cpu.as_dict()
        if self.foreign_load is not None:
            entry["other_load_on_gateway_core"] = round(self.foreign_load, 3)
        if self.profile is not None:
            total, functions = top_functions(self.profile, profile_top)
            entry["profile"] = {
                "collapsed_stacks": str(self.profile),
                "samples": total,
                "top_self": [share.as_dict() for share in functions],
            }
        return entry


@dataclass(frozen=True, slots=True)
class Summary:
    """The median of the repeats of one target at one concurrency."""

    target: str
    concurrency: int
    runs: int
    rps: float
    p50_ms: float
    p99_ms: float
    rps_range: tuple[float, float]
    p50_range: tuple[float, float]
    requests: int
    errors: int
    gateway_cpu: CpuShare | None
    max_foreign_load: float | None

    def as_dict(self) -> dict[str, Any]:
        entry = asdict(self)
        entry["gateway_cpu"] = None if self.gateway_cpu is None else self.gateway_cpu.as_dict()
        entry["gateway_cpu_us_per_request"] = self.cpu_us_per_request
        entry["rps_per_gateway_core"] = self.rps_per_core
        return entry

    @property
    def rps_per_core(self) -> float | None:
        """req/s scaled to the gateway having its whole core: what it would do alone on the machine.

        Only meaningful when the gateway is the bottleneck (high concurrency); at concurrency 1 it
        also counts the idle event loop's wake-ups, so it understates.
        """
        if self.gateway_cpu is None or not self.gateway_cpu.total:
            return None
        return round(self.rps / self.gateway_cpu.total, 1)

    @property
    def cpu_us_per_request(self) -> float | None:
        """Gateway CPU time per request, in microseconds: the cost that caps req/s on one core."""
        if self.gateway_cpu is None or not self.rps:
            return None
        return round(self.gateway_cpu.total / self.rps * 1e6, 1)


def summarize(measurements: list[Measurement]) -> list[Summary]:
    """Medians per (target, concurrency), in the order the runs were made."""
    groups: dict[tuple[str, int], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.target, m.result.concurrency), []).append(m)
    return [_summary(target, concurrency, runs) for (target, concurrency), runs in groups.items()]


def _summary(target: str, concurrency: int, runs: list[Measurement]) -> Summary:
    results = [m.result for m in runs]
    cpus = [m.gateway_cpu for m in runs if m.gateway_cpu is not None]
    foreign = [m.foreign_load for m in runs if m.foreign_load is not None]
    cpu = None
    if cpus:
        cpu = CpuShare(statistics.median(c.user for c in cpus), statistics.median(c.system for c in cpus))
    return Summary(
        target=target,
        concurrency=concurrency,
        runs=len(runs),
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        rps_range=(min(r.rps for r in results), max(r.rps for r in results)),
        p50_range=(min(r.p50_ms for r in results), max(r.p50_ms for r in results)),
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
        gateway_cpu=cpu,
        max_foreign_load=max(foreign) if foreign else None,
    )


def comparison(summaries: list[Summary]) -> list[dict[str, float]]:
    """Per concurrency: what going through Prefit adds over the direct call."""
    by_key = {(s.target, s.concurrency): s for s in summaries}
    rows = []
    for concurrency in sorted({s.concurrency for s in summaries}):
        direct, through = by_key.get(("direct", concurrency)), by_key.get(("prefit", concurrency))
        if direct is None or through is None:
            continue
        rows.append(
            {
                "concurrency": concurrency,
                "added_p50_ms": round(through.p50_ms - direct.p50_ms, 4),
                "added_p99_ms": round(through.p99_ms - direct.p99_ms, 4),
                "rps_ratio": round(through.rps / direct.rps, 4) if direct.rps else 0.0,
                "p50_ratio": round(through.p50_ms / direct.p50_ms, 2) if direct.p50_ms else 0.0,
            }
        )
    return rows


def verdicts(summaries: list[Summary], compared: list[dict[str, float]]) -> list[dict[str, Any]]:
    """The two targets of the core-gateway issue, each with its measured value (None when not measured)."""
    added = next((row["added_p50_ms"] for row in compared if row["concurrency"] == 1), None)
    through32 = next((s for s in summaries if s.target == "prefit" and s.concurrency == 32), None)
    rps32 = None if through32 is None else through32.rps
    return [
        {
            "name": "added p50 at concurrency 1",
            "goal": f"<= {TARGET_ADDED_P50_MS} ms",
            "measured": None if added is None else round(added, 3),
            "unit": "ms",
            "passed": None if added is None else added <= TARGET_ADDED_P50_MS,
        },
        {
            "name": "req/s through Prefit at concurrency 32, one core",
            "goal": f">= {TARGET_RPS_C32:,.0f} req/s",
            "measured": None if rps32 is None else round(rps32, 1),
            "unit": "req/s",
            "passed": None if rps32 is None else rps32 >= TARGET_RPS_C32,
            "per_full_core": None if through32 is None else through32.rps_per_core,
        },
    ]


def foreign_load_warning(summaries: list[Summary], threshold: float = 0.05) -> str | None:
    """A warning when other processes used a noticeable share of the gateway's core during some run."""
    worst = max((s.max_foreign_load or 0.0 for s in summaries), default=0.0)
    if worst < threshold:
        return None
    return (
        f"other processes used up to {worst:.0%} of the gateway's core during these runs: the figures understate "
        "the gateway; see 'req/s per core' and rerun on a quiet machine"
    )


# -- the machine ------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, kernel, Python, the hot path's package versions and wrk's version."""
    cpu_model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "wrk": _wrk_version(),
    }


def _wrk_version() -> str | None:
    if shutil.which("wrk") is None:
        return None
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10, check=False)
    lines = (done.stdout or done.stderr).splitlines()
    return lines[0].strip() if lines else "unknown"


# -- tables -----------------------------------------------------------------------------------------


def figures_table(summaries: list[Summary], policy: str) -> Table:
    runs = max((s.runs for s in summaries), default=1)
    repeated = runs > 1
    title = "Non-streaming chat completions, direct vs through Prefit"
    table = Table(title=title + (f" (median of {runs} runs, range in brackets)" if repeated else ""))
    columns = ["target", "conc.", "req/s", "p50 ms", "p99 ms", "errors", "gateway CPU", "CPU µs/req", "req/s per core"]
    columns.append("others")
    for column in columns:
        table.add_column(column, justify="left" if column == "target" else "right")
    for s in summaries:
        rps, p50 = f"{s.rps:,.0f}", f"{s.p50_ms:.3f}"
        if repeated:
            rps += f" [dim]({s.rps_range[0]:,.0f}-{s.rps_range[1]:,.0f})[/dim]"
            p50 += f" [dim]({s.p50_range[0]:.3f}-{s.p50_range[1]:.3f})[/dim]"
        cpu = "-" if s.gateway_cpu is None else f"{s.gateway_cpu.user:.0%} usr {s.gateway_cpu.system:.0%} sys"
        table.add_row(
            "direct" if s.target == "direct" else f"prefit ({policy})",
            str(s.concurrency),
            rps,
            p50,
            f"{s.p99_ms:.3f}",
            f"[red]{s.errors}[/red]" if s.errors else "0",
            cpu,
            "-" if s.cpu_us_per_request is None else f"{s.cpu_us_per_request:.0f}",
            "-" if s.rps_per_core is None else f"{s.rps_per_core:,.0f}",
            "-" if s.max_foreign_load is None else f"{s.max_foreign_load:.0%}",
        )
    table.caption = (
        "req/s per core: req/s over the gateway's CPU share (its capacity alone on a core, meaningful when saturated); "
        "others: the most any run saw other processes use of the gateway's core"
    )
    return table


def cost_table(compared: list[dict[str, float]]) -> Table:
    table = Table(title="What the Prefit hop costs (through minus, and over, direct)")
    for column in ("conc.", "added p50 ms", "added p99 ms", "req/s through/direct", "p50 through/direct"):
        table.add_column(column, justify="right")
    for row in compared:
        table.add_row(
            str(row["concurrency"]),
            f"{row['added_p50_ms']:.3f}",
            f"{row['added_p99_ms']:.3f}",
            f"{row['rps_ratio']:.3f}",
            f"{row['p50_ratio']:.1f}x",
        )
    return table


def profile_table(measurement: Measurement, limit: int) -> Table:
    if measurement.profile is None:
        raise ValueError("this run was not profiled")
    total, functions = top_functions(measurement.profile, limit)
    table = Table(title=f"py-spy at concurrency {measurement.result.concurrency}: {total:,} samples")
    table.caption = str(measurement.profile)
    for column in ("self", "incl.", "function"):
        table.add_column(column, justify="left" if column == "function" else "right")
    for share in functions:
        table.add_row(f"{share.self_share:.1%}", f"{share.inclusive_share:.1%}", share.function or "(native)")
    return table


def verdict_table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="Targets")
    for column in ("target", "goal", "measured", "result", "note"):
        table.add_column(column)
    marks = {True: "[green]pass[/green]", False: "[red]FAIL[/red]", None: "[yellow]n/a[/yellow]"}
    for verdict in results:
        measured = "not measured" if verdict["measured"] is None else f"{verdict['measured']:,} {verdict['unit']}"
        per_core = verdict.get("per_full_core")
        note = "" if per_core is None else f"{per_core:,.0f} req/s per full gateway core"
        table.add_row(verdict["name"], verdict["goal"], measured, marks[verdict["passed"]], note)
    return table
