"""Orchestrates ``prefit eval``: choose dataset, variants and scorers, run, report, apply gates."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gateway.config.files import PolicyFiles
from gateway.config.load import Config, LoadedPolicy
from gateway.eval.report import check_gates, compare, render_report, report_json, summarise
from gateway.eval.runner import EvalItem, ItemResult, Runner, in_process_gateway, load_dataset
from gateway.eval.scoring import build_scorers
from gateway.retrieval.resources import ResourceHub
from middleware.base import LayerError
from middleware.output import OutputLayer

__all__ = ["EvalOptions", "run_eval", "save_run"]

_CACHE_DIR = Path(".prefit") / "eval-cache"


@dataclass(frozen=True, slots=True)
class EvalOptions:
    policy: str
    dataset: Path | None = None
    variants: list[str] | None = None
    baseline: str | None = None
    json_out: Path | None = None
    url: str | None = None
    key: str | None = None
    repeat: int = 1
    use_cache: bool = True
    concurrency: int | None = None
    cache_dir: Path = _CACHE_DIR
    save: bool = False


def _dataset_path(policy: LoadedPolicy, explicit: Path | None, base: Path) -> Path:
    if explicit is not None:
        return explicit
    if policy.spec.eval is None:
        raise ValueError(f"policy {policy.name!r} has no `eval.dataset`; pass --dataset")
    source = Path(policy.source)
    source = source if source.is_absolute() else Path.cwd() / source
    files = PolicyFiles(source.parent, [source.parent, base], Path.cwd())
    try:
        return files.resolve(("eval", "dataset"), policy.spec.eval.dataset)
    except LayerError as exc:
        raise ValueError(f"{policy.source}: eval.dataset: {exc.message}") from None


def _schema(policy: LoadedPolicy) -> dict[str, object] | None:
    for layer in policy.primary.pipeline.layers:
        if isinstance(layer, OutputLayer) and isinstance(layer.validator.schema, Mapping):
            return dict(layer.validator.schema)
    return None


@contextlib.asynccontextmanager
async def _gateway(
    config: Config, options: EvalOptions, resources: ResourceHub
) -> AsyncIterator[tuple[str, str | None]]:
    if options.url is not None:
        yield options.url, options.key
        return
    async with in_process_gateway(config, resources) as (url, key):
        yield url, key


async def run_eval(config: Config, options: EvalOptions, resources: ResourceHub) -> bool:
    """Run, print and optionally write the report; True when every gate passed. Raises ``ValueError``.

    ``resources`` is the hub ``config`` was loaded with; the in-process gateway closes it."""
    policy = config.policies.get(options.policy)
    if policy is None:
        raise ValueError(f"no policy serves {options.policy!r}")
    items = load_dataset(_dataset_path(policy, options.dataset, config.base_dir))
    names = options.variants or [v.name for v in policy.variants]
    unknown = [name for name in names if policy.variant(name) is None]
    if unknown:
        raise ValueError(f"{policy.name!r} has no variant(s) {', '.join(unknown)}")
    if options.baseline is not None and options.baseline not in names:
        raise ValueError(f"baseline {options.baseline!r} is not among the variants run")
    spec = policy.spec.eval
    scorers = build_scorers(spec.metrics if spec else ["exact_match"], _schema(policy))
    metrics = [scorer.name for scorer in scorers]
    concurrency = options.concurrency or (spec.concurrency if spec else 4)
    console = Console(width=None if sys.stdout.isatty() else 160)
    results: dict[str, list[ItemResult]] = {name: [] for name in names}
    async with _gateway(config, options, resources) as (url, key):
        runner = Runner(url, key, policy, scorers, options.cache_dir, concurrency)
        try:
            await _run_all(runner, items, names, options, results, console)
        finally:
            await runner.close()
    summaries = [summarise(name, results[name], metrics) for name in names]
    comparisons = []
    if options.baseline is not None:
        base = next(s for s in summaries if s.variant == options.baseline)
        # A comparison with a side that measured nothing would count its failures as wrong answers.
        comparisons = [
            compare(s, base, metrics[0])
            for s in summaries
            if s.variant != options.baseline and s.measured and base.measured
        ]
    serving = {name for name in names if (variant := policy.variant(name)) is not None and variant.weight > 0}
    failures = check_gates(summaries, spec.gates if spec else {}, serving or None)
    render_report(console, policy.name, summaries, comparisons, metrics, failures)
    dataset = str(options.dataset) if options.dataset else (spec.dataset if spec else "")
    report = report_json(policy.name, dataset, summaries, comparisons, failures)
    if options.json_out is not None:
        options.json_out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if options.save:
        saved = save_run(Path(config.settings.eval_runs_dir), report, config.base_dir)
        console.print(f"saved {saved}")
    return not failures


async def _run_all(
    runner: Runner,
    items: list[EvalItem],
    names: list[str],
    options: EvalOptions,
    results: dict[str, list[ItemResult]],
    console: Console,
) -> None:
    jobs = [(name, repeat, item) for name in names for repeat in range(options.repeat) for item in items]
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"eval {runner.policy.name}", total=len(jobs))

        async def one(name: str, repeat: int, item: EvalItem) -> None:
            result = await runner.run_item(item, name, repeat, options.use_cache)
            results[name].append(result)
            progress.advance(task)

        await asyncio.gather(*(one(name, repeat, item) for name, repeat, item in jobs))
    for name in names:
        results[name].sort(key=lambda r: (r.repeat, r.item.id))


def save_run(folder: Path, report: dict[str, object], base_dir: Path) -> Path:
    """Store a run where the console finds it: ``<eval_runs_dir>/<policy>-<UTC time>.json``."""
    folder = folder if folder.is_absolute() else base_dir / folder
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = folder / f"{report['policy']}-{stamp}.json"
    path.write_bytes(orjson.dumps({**report, "saved_at": time.time()}, option=orjson.OPT_INDENT_2))
    return path
