"""``prefit advise``: should this policy keep prompting, or is a fine-tune the next step?

Reads the newest stored eval run of the policy and the newest stored k-sweep (score against number
of examples) from ``eval_runs_dir``; what is missing it runs itself, through the real gateway and
the eval cache, and stores, so a second ``advise`` makes no calls. Then it prints the three
signals of ``gateway.eval.signals`` with their evidence and one verdict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from gateway.config.load import Config, LoadedPolicy, load_config
from gateway.eval.candidates import Arm, serve_arms
from gateway.eval.finetune import policy_examples
from gateway.eval.report import report_json, summarise
from gateway.eval.run import EvalOptions, _dataset_path, _schema, run_eval
from gateway.eval.runner import EvalItem, load_dataset
from gateway.eval.scoring import build_scorers
from gateway.eval.search import overlapping, spread, sweep_ks
from gateway.eval.signals import capability_signal, cost_signal, format_signal, verdict
from gateway.retrieval.resources import ResourceHub

__all__ = ["AdviseOptions", "render_advice", "run_advise"]

_CACHE_DIR = Path(".prefit") / "eval-cache"


@dataclass(frozen=True, slots=True)
class AdviseOptions:
    policy: str
    settings_file: Path | None
    train: Path | None = None
    cache_dir: Path = _CACHE_DIR


def _runs_dir(config: Config) -> Path:
    folder = Path(config.settings.eval_runs_dir)
    return folder if folder.is_absolute() else config.base_dir / folder


def latest_run(folder: Path, policy: str, sweep: bool) -> tuple[Path, dict[str, Any]] | None:
    """The newest stored run of ``policy`` (a k-sweep when ``sweep``), by the time it was saved."""
    found: list[tuple[float, Path, dict[str, Any]]] = []
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            report = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if isinstance(report, dict) and report.get("policy") == policy and bool(report.get("sweep")) == sweep:
            found.append((float(report.get("saved_at") or 0.0), path, report))
    if not found:
        return None
    _, path, report = max(found, key=lambda entry: entry[0])
    return path, report


def _sweep_examples(config: Config, policy: LoadedPolicy, options: AdviseOptions) -> list[EvalItem]:
    serving = max(policy.variants, key=lambda v: v.weight)
    items = load_dataset(options.train) if options.train else policy_examples(policy, serving, config)
    heldout = load_dataset(_dataset_path(policy, None, config.base_dir))
    excluded = set(overlapping(items, heldout))
    kept = [item for item in items if item.id not in excluded]
    return list(spread(kept, len(kept)))


async def _run_sweep(config: Config, policy: LoadedPolicy, options: AdviseOptions) -> dict[str, Any]:
    examples = _sweep_examples(config, policy, options)
    heldout = load_dataset(_dataset_path(policy, None, config.base_dir))
    spec = policy.spec.eval
    scorers = build_scorers(spec.metrics if spec else ["exact_match"], _schema(policy))
    metrics = [scorer.name for scorer in scorers]
    ks = sweep_ks(len(examples))
    arms = [Arm(f"k{k}", tuple(examples[:k])) for k in ks]
    concurrency = spec.concurrency if spec else 4
    summaries = []
    async with serve_arms(options.settings_file, policy.name, arms, scorers, options.cache_dir, concurrency) as s:
        for arm in arms:
            summaries.append(summarise(arm.name, await s.run(arm.name, heldout), metrics))
    report = report_json(policy.name, spec.dataset if spec else "", summaries, [], [])
    report.update(sweep="k", ks={arm.name: arm.k for arm in arms}, labelled=len(examples), saved_at=time.time())
    folder = _runs_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (folder / f"{policy.name}-ksweep-{stamp}.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


def _points(sweep: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    points = []
    for name, k in sweep["ks"].items():
        data = sweep["variants"].get(name)
        if data is None or not data.get("measured"):
            continue
        low, high = data["interval"]
        points.append({"k": k, "score": data["scores"][metric], "low": low, "high": high})
    return sorted(points, key=lambda p: p["k"])


async def run_advise(config: Config, options: AdviseOptions, console: Console) -> dict[str, Any]:
    """Gather (or make) the runs and compute the advice; the ``--json`` report. Raises ``ValueError``."""
    policy = config.policies.get(options.policy)
    if policy is None:
        raise ValueError(f"no policy serves {options.policy!r}")
    if policy.spec.eval is None:
        raise ValueError(f"policy {policy.name!r} has no `eval.dataset` to measure on")
    folder = _runs_dir(config)
    stored = latest_run(folder, policy.name, sweep=False)
    if stored is None:
        console.print(f"no stored eval run of {policy.name} in {folder}: running one")
        hub = ResourceHub()
        fresh = load_config(options.settings_file, resources=hub)
        hub.configure(fresh.settings, fresh.base_dir.resolve())
        await run_eval(fresh, EvalOptions(policy=policy.name, save=True, cache_dir=options.cache_dir), hub)
        stored = latest_run(folder, policy.name, sweep=False)
        if stored is None:
            raise ValueError("the eval run was not stored")
    run_path, run = stored
    sweep_stored = latest_run(folder, policy.name, sweep=True)
    if sweep_stored is None:
        console.print(f"no stored k-sweep of {policy.name}: running one on the held-out set")
        sweep = await _run_sweep(config, policy, options)
        sweep_source = "measured now"
    else:
        sweep_source, sweep = str(sweep_stored[0]), sweep_stored[1]
    metric = next(iter(next(iter(run["variants"].values()))["scores"]))
    fmt, cost = format_signal(run, metric), cost_signal(run, metric)
    capability = capability_signal(_points(sweep, metric), int(sweep.get("labelled", 0)))
    name, reason = verdict(fmt, cost, capability)
    return {
        "policy": policy.name,
        "metric": metric,
        "run": str(run_path),
        "sweep": sweep_source,
        "signals": {"format": fmt, "cost": cost, "capability": capability},
        "verdict": name,
        "reason": reason,
    }


def render_advice(console: Console, advice: dict[str, Any]) -> None:
    console.print(f"prefit advise {advice['policy']} (from {advice['run']}; k-sweep: {advice['sweep']})")
    for signal in ("format", "cost", "capability"):
        data = advice["signals"][signal]
        mark = "[yellow]signal[/yellow]" if data["flag"] else "no signal"
        console.print(f"  {signal}: {mark}: {data['evidence']}")
    console.print(f"verdict: [bold]{advice['verdict']}[/bold]: {advice['reason']}")
