"""Orchestrates ``prefit eval``: choose dataset, variants and scorers, run, report, apply gates."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gateway.config.files import PolicyFiles
from gateway.config.load import Config, LoadedPolicy
from gateway.eval.analysis import confusion, failure_counts, mark_failures, slices
from gateway.eval.analysis_view import render_analysis
from gateway.eval.clusters import cluster_failures
from gateway.eval.fingerprint import content_hash, dataset_hash
from gateway.eval.judge import run_judges
from gateway.eval.report import Summary, check_gates, compare, render_report, report_json, summarise
from gateway.eval.runner import EvalItem, ItemResult, Runner, in_process_gateway, load_dataset
from gateway.eval.scoring import Scorer, build_scorers
from gateway.retrieval.embedding import Embedder, EmbeddingError, default_cache_dir
from gateway.retrieval.resources import ResourceHub
from gateway.runs.store import save_run
from middleware.base import LayerError
from middleware.output import OutputLayer

__all__ = ["EvalOptions", "check_slice_fields", "run_eval"]

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
    save: bool = True
    #: ``metadata`` fields to slice the scores by (``--by``).
    by: tuple[str, ...] = ()


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
    dataset_path = _dataset_path(policy, options.dataset, config.base_dir)
    items = load_dataset(dataset_path)
    names = options.variants or [v.name for v in policy.variants]
    unknown = [name for name in names if policy.variant(name) is None]
    if unknown:
        raise ValueError(f"{policy.name!r} has no variant(s) {', '.join(unknown)}")
    if options.baseline is not None and options.baseline not in names:
        raise ValueError(f"baseline {options.baseline!r} is not among the variants run")
    spec = policy.spec.eval
    scorers = build_scorers(spec.metrics if spec else ["exact_match"], _schema(policy))
    metrics = [scorer.name for scorer in scorers]
    judges = _judge_policies(config, scorers)
    concurrency = options.concurrency or (spec.concurrency if spec else 4)
    console = Console(width=None if sys.stdout.isatty() else 160)
    for warning in check_slice_fields(items, options.by):
        console.print(f"[yellow]{warning}[/yellow]")
    results: dict[str, list[ItemResult]] = {name: [] for name in names}
    async with _gateway(config, options, resources) as (url, key):
        runners = {name: Runner(url, key, judge, [], options.cache_dir, concurrency) for name, judge in judges.items()}
        runner = Runner(url, key, policy, scorers, options.cache_dir, concurrency)
        try:
            await _run_all(runner, items, names, options, results, console)
            await run_judges(runners, scorers, [r for name in names for r in results[name]], options.use_cache)
        finally:
            for one in (runner, *runners.values()):
                await one.close()
    summaries = [summarise(name, results[name], metrics) for name in names]
    analyses = await _analyse(config, summaries, metrics[0], _schema(policy), list(options.by), console)
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
    render_analysis(console, analyses)
    dataset = str(options.dataset) if options.dataset else (spec.dataset if spec else "")
    report = report_json(policy.name, dataset, summaries, comparisons, failures)
    _add_record(report, policy, names, analyses, dataset_path, list(options.by))
    if options.save:
        folder = Path(config.settings.eval_runs_dir)
        saved = save_run(folder if folder.is_absolute() else config.base_dir / folder, report)
        report = orjson.loads(saved.read_bytes())
        console.print(f"saved run {report['run_id']} ({saved})")
    if options.json_out is not None:
        options.json_out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return not failures


def check_slice_fields(items: list[EvalItem], fields: tuple[str, ...]) -> list[str]:
    """Warnings for ``--by`` fields some items lack (counted as ``(none)``). Raises ``ValueError`` if all do."""
    warnings = []
    for field in fields:
        lacking = [item for item in items if item.metadata.get(field) is None]
        if not lacking:
            continue
        where = f"{lacking[0].source}:{','.join(str(i.line) for i in lacking[:10])}"
        where += ",..." if len(lacking) > 10 else ""
        if len(lacking) == len(items):
            raise ValueError(f"--by {field}: no item has metadata field {field!r} (first: {where})")
        warnings.append(f"{where}: no metadata field {field!r}; {len(lacking)} item(s) counted as (none)")
    return warnings


def _judge_policies(config: Config, scorers: list[Scorer]) -> dict[str, LoadedPolicy]:
    judges = {}
    for scorer in scorers:
        if scorer.judge is not None:
            found = config.policies.get(scorer.judge.model)
            if found is None:
                raise ValueError(f"judge metric: no policy serves {scorer.judge.model!r}")
            judges[scorer.judge.model] = found
    return judges


def _embedder(config: Config) -> Embedder:
    spec = config.settings.embedding
    cache = Path(spec.cache_dir) if spec.cache_dir else default_cache_dir()
    return Embedder(cache_dir=cache if cache.is_absolute() else config.base_dir / cache, model_dir=spec.model_dir)


async def _analyse(
    config: Config,
    summaries: list[Summary],
    metric: str,
    schema: dict[str, object] | None,
    by: list[str],
    console: Console,
) -> dict[str, dict[str, object]]:
    """Per variant: failure kinds (also marked on each item), slices, confusion and clusters."""
    embedder: Embedder | None = None
    out: dict[str, dict[str, object]] = {}
    for summary in summaries:
        results = summary.results
        mark_failures(results, metric, schema)
        failing = [r for r in results if r.failure is not None]
        clusters: list[dict[str, object]] = []
        if len(failing) > 1:
            embedder = embedder or _embedder(config)
            try:
                clusters = await cluster_failures(failing, embedder)
            except EmbeddingError as exc:
                console.print(f"[yellow]no clusters: {exc}[/yellow]")
        out[summary.variant] = {
            "slices": slices(results, by, metric),
            "confusion": confusion(results),
            "failures": failure_counts(results),
            "clusters": clusters,
        }
    return out


def _add_record(
    report: dict[str, object],
    policy: LoadedPolicy,
    names: list[str],
    analyses: dict[str, dict[str, object]],
    dataset: Path,
    by: list[str],
) -> None:
    """What a stored run needs beyond the scores: fingerprints, and the analysis per variant."""
    report["dataset_hash"] = dataset_hash(dataset)
    report["by"] = by
    variants = report["variants"]
    assert isinstance(variants, dict)
    for name in names:
        variant = policy.variant(name)
        assert variant is not None
        variants[name]["prompt_version"] = variant.prompt_version
        variants[name]["content_hash"] = content_hash(policy, variant, dataset)
        variants[name].update(analyses[name])


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
