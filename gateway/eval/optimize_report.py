"""The ``prefit optimize`` report: the ``--json`` shape the contract names, and its printed summary."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

from gateway.config.load import LoadedPolicy
from gateway.eval.candidates import Arm, example_records
from gateway.eval.runner import EvalItem, ItemResult

__all__ = ["build_report", "console_for_cli", "render_optimize"]


def build_report(
    policy: LoadedPolicy,
    options: Any,
    search: Any,
    train: list[EvalItem],
    pool: list[EvalItem],
    dev: list[EvalItem],
    heldout: list[EvalItem],
    serving: str,
    best: tuple[Arm, list[ItemResult]] | None,
    warnings: list[str],
) -> dict[str, Any]:
    base_dev = next((c["dev_score"] for c in search.candidates if c["baseline"]), None)
    winner = None
    if best is not None:
        arm, results = best
        system = arm.system
        if system is None and policy.primary.spec.prompt is not None:
            system = str(policy.primary.spec.prompt.system)
        winner = {
            "name": arm.name,
            "examples": example_records(arm.examples or ()),
            "k": arm.k,
            "system": system,
            "dev_score": search.score(results),
            "heldout_score": None,
            "low": None,
            "high": None,
        }
    return {
        "policy": policy.name,
        "train": str(options.train),
        "seed": options.seed,
        "budget": options.budget,
        "calls": search.calls,
        "cost_usd": search.cost,
        "sizes": {"train": len(train), "pool": len(pool), "dev": len(dev), "heldout": len(heldout)},
        "metric": search.metric,
        "baseline": {"variant": serving, "dev_score": base_dev, "heldout_score": None, "low": None, "high": None},
        "winner": winner,
        "p_value": None,
        "better": None,
        "worse": None,
        "candidates": search.candidates,
        "warnings": warnings,
        "stopped": search.stopped,
    }


def render_optimize(console: Console, report: dict[str, Any]) -> None:
    """The human summary of a report."""
    sizes = report["sizes"]
    console.print(
        f"prefit optimize {report['policy']}: {sizes['train']} training items ({sizes['pool']} pool, "
        f"{sizes['dev']} dev), {sizes['heldout']} held out; {report['calls']} search calls of "
        f"{report['budget']}, cost ${report['cost_usd']:.4f}"
    )
    for candidate in sorted(report["candidates"], key=lambda c: -c["dev_score"])[:10]:
        tag = " (serving)" if candidate["baseline"] else ""
        console.print(
            f"  {candidate['name']}{tag}: k={candidate['k']} dev {report['metric']} {candidate['dev_score']:.3f}"
        )
    base, winner = report["baseline"], report["winner"]
    if winner is None:
        console.print("[yellow]no candidate was measured[/yellow]")
    else:
        console.print(f"winner {winner['name']}: k={winner['k']} dev {winner['dev_score']:.3f}")
        for label, side in (("serving " + base["variant"], base), ("winner", winner)):
            if side["heldout_score"] is not None:
                console.print(
                    f"  held out, {label}: {side['heldout_score']:.3f} [{side['low']:.3f}, {side['high']:.3f}]"
                )
        if report["p_value"] is not None:
            console.print(
                f"  winner vs {base['variant']}: {report['better']} better, {report['worse']} worse, "
                f"exact McNemar p = {report['p_value']:.4f}"
            )
    if report["stopped"]:
        console.print(f"[red]stopped[/red]: {report['stopped']}; the report holds what was measured before")


def console_for_cli() -> Console:
    return Console(width=None if sys.stdout.isatty() else 160)
