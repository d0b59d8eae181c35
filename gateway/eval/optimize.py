"""``prefit optimize``: search few-shot example sets (and, optionally, system prompts) on a dev split,
then confirm the best on the held-out set against the serving variant.

Every candidate is a real variant served by the real gateway through the eval call cache, so a
rerun with the same seed makes the same choices and costs nothing. ``--budget`` counts calls in the
search (the zero-shot bootstrap on the pool, the serving variant and each candidate on the dev
split, each proposal); the held-out confirmation of the winner and the serving variant comes on top.
An upstream that fails stops the search: the report keeps what was measured and says why it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gateway.config.load import Config, LoadedPolicy
from gateway.eval.candidates import Arm, Session, serve_arms
from gateway.eval.optimize_report import build_report
from gateway.eval.report import compare, summarise
from gateway.eval.run import _dataset_path, _schema
from gateway.eval.runner import EvalItem, ItemResult, load_dataset
from gateway.eval.scoring import build_scorers
from gateway.eval.search import MIN_TRAIN, candidate_sets, label_set, overlapping, split

__all__ = ["OptimizeOptions", "Refused", "run_optimize"]

_CACHE_DIR = Path(".prefit") / "eval-cache"


class Refused(ValueError):
    """Input the search cannot honestly run on; the CLI exits 2 with the message."""


@dataclass(frozen=True, slots=True)
class OptimizeOptions:
    policy: str
    train: Path
    settings_file: Path | None
    budget: int = 200
    seed: int = 0
    propose: str | None = None
    proposals: int = 2
    cache_dir: Path = _CACHE_DIR
    concurrency: int | None = None


@dataclass(slots=True)
class _Search:
    metric: str
    budget: int
    calls: int = 0
    cost: float = 0.0
    stopped: str | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def account(self, result: ItemResult) -> None:
        self.calls += 1
        self.cost += result.cost_usd or 0.0

    def score(self, results: Sequence[ItemResult]) -> float:
        return sum(r.scores.get(self.metric, 0.0) for r in results) / max(1, len(results))

    def failed(self, what: str, results: Sequence[ItemResult]) -> bool:
        errors = [r for r in results if r.error is not None]
        if errors and self.stopped is None:
            self.stopped = f"upstream failed during {what} ({len(errors)} of {len(results)} calls): {errors[0].error}"
        return bool(errors)


def _load_inputs(config: Config, options: OptimizeOptions) -> tuple[LoadedPolicy, list[EvalItem], list[EvalItem]]:
    policy = config.policies.get(options.policy)
    if policy is None:
        raise Refused(f"no policy serves {options.policy!r}")
    if options.budget <= 0:
        raise Refused("--budget must be at least 1 call; a search with no calls measures nothing")
    try:
        train = load_dataset(options.train)
    except ValueError as exc:
        raise Refused(f"training file: {exc}") from None
    if len(train) < MIN_TRAIN:
        raise Refused(
            f"training file {options.train} has {len(train)} item(s); at least {MIN_TRAIN} are needed "
            "for a pool of examples and a dev split"
        )
    heldout = load_dataset(_dataset_path(policy, None, config.base_dir))
    overlap = overlapping(train, heldout)
    if overlap:
        raise Refused(f"training items also in the held-out eval.dataset (same id or input): {', '.join(overlap)}")
    return policy, train, heldout


def _proposal_prompt(system: str, failures: list[ItemResult]) -> str:
    lines = [
        "You improve the system prompt of a model. Its current system prompt is:",
        system or "(none)",
        "",
        "It answered these inputs wrongly:",
    ]
    for result in failures[:8]:
        lines.append(f"- input: {result.item.input!s} | expected: {result.item.expected!s} | got: {result.output!r}")
    lines.append("")
    lines.append("Reply with the new system prompt only.")
    return "\n".join(lines)


async def _propose(
    options: OptimizeOptions, search: _Search, system: str, failures: list[ItemResult], scorers: Any
) -> list[str]:
    assert options.propose is not None
    asks = [
        EvalItem(f"propose-{index}", _proposal_prompt(system, failures[index:] + failures[:index]), "")
        for index in range(options.proposals)
    ]
    async with serve_arms(options.settings_file, options.propose, [], scorers, options.cache_dir, 1) as session:
        variant = session.policy.primary.name
        answers = await session.run(variant, asks, search.account)
    if search.failed("the instruction proposals", answers):
        return []
    return [text for answer in answers if (text := answer.output.strip())]


def _record(search: _Search, arm: Arm, dev_results: list[ItemResult], baseline: bool = False) -> dict[str, Any]:
    entry = {
        "name": arm.name,
        "k": arm.k,
        "examples": None if arm.examples is None else [item.id for item in arm.examples],
        "system": arm.system,
        "dev_score": search.score(dev_results),
        "baseline": baseline,
    }
    search.candidates.append(entry)
    return entry


async def _dev_round(
    session: Session, search: _Search, arms: list[Arm], dev: list[EvalItem], progress: Progress, task: Any
) -> list[tuple[Arm, list[ItemResult]]]:
    measured = []
    for arm in arms:
        if search.stopped is not None or search.calls + len(dev) > search.budget:
            break
        results = await session.run(arm.name, dev, lambda r: _tick(search, r, progress, task))
        if search.failed(f"candidate {arm.name}", results):
            break
        _record(search, arm, results)
        measured.append((arm, results))
    return measured


def _tick(search: _Search, result: ItemResult, progress: Progress, task: Any) -> None:
    search.account(result)
    progress.update(task, advance=1, description=f"optimize: {search.calls} calls, ${search.cost:.4f}")


async def run_optimize(config: Config, options: OptimizeOptions, console: Console) -> dict[str, Any]:
    """Run the search and the confirmation; the ``--json`` report. Raises ``Refused``."""
    policy, train, heldout = _load_inputs(config, options)
    spec = policy.spec.eval
    scorers = build_scorers(spec.metrics if spec else ["exact_match"], _schema(policy))
    search = _Search(scorers[0].name, options.budget)
    concurrency = options.concurrency or (spec.concurrency if spec else 4)
    warnings = []
    if label_set(train) != label_set(heldout):
        warnings.append(
            f"training labels {sorted(label_set(train))} differ from held-out labels {sorted(label_set(heldout))}"
        )
        console.print(f"[yellow]warning[/yellow]: {warnings[-1]}")
    pool, dev = split(train, options.seed)
    serving = max(policy.variants, key=lambda v: v.weight).name
    zero = Arm("opt-zero-shot", ())
    if len(pool) + len(dev) > options.budget:
        raise Refused(
            f"--budget {options.budget} is below one bootstrap ({len(pool)} pool items) plus one candidate "
            f"on the dev split ({len(dev)} items)"
        )
    # With --propose, the rewrites keep their share of the budget: each is one call plus the dev split.
    reserve = options.proposals * (1 + len(dev)) if options.propose else 0
    limit = max(1, (options.budget - len(pool) - len(dev) - reserve) // len(dev))
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("optimize", total=options.budget)
        async with serve_arms(options.settings_file, policy.name, [zero], scorers, options.cache_dir, concurrency) as s:
            boot = await s.run(zero.name, pool, lambda r: _tick(search, r, progress, task))
        wrong = {r.item.id for r in boot if r.scores.get(search.metric, 0.0) < 0.5}
        search.failed("the zero-shot bootstrap", boot)
        sets = candidate_sets(pool, wrong, options.seed, limit)
        arms = [Arm(f"opt-{index:03d}", chosen) for index, chosen in enumerate(sets)]
        measured: list[tuple[Arm, list[ItemResult]]] = []
        if search.stopped is None:
            async with serve_arms(
                options.settings_file, policy.name, arms, scorers, options.cache_dir, concurrency
            ) as session:
                base_dev = await session.run(serving, dev, lambda r: _tick(search, r, progress, task))
                if not search.failed(f"the serving variant {serving}", base_dev):
                    _record(search, Arm(serving), base_dev, baseline=True)
                    measured = await _dev_round(session, search, arms, dev, progress, task)
        best = max(measured, key=lambda pair: (search.score(pair[1]), -(pair[0].k or 0)), default=None)
        if best is not None and options.propose and search.stopped is None:
            best = await _instruction_round(options, search, policy, best, dev, scorers, concurrency, progress, task)
        report = build_report(policy, options, search, train, pool, dev, heldout, serving, best, warnings)
        if best is not None and search.stopped is None:
            await _confirm(options, search, policy, serving, best, heldout, scorers, concurrency, report)
    return report


async def _instruction_round(
    options: OptimizeOptions,
    search: _Search,
    policy: LoadedPolicy,
    best: tuple[Arm, list[ItemResult]],
    dev: list[EvalItem],
    scorers: Any,
    concurrency: int,
    progress: Progress,
    task: Any,
) -> tuple[Arm, list[ItemResult]]:
    arm, results = best
    system = policy.primary.spec.prompt.system if policy.primary.spec.prompt else ""
    failures = [r for r in results if r.scores.get(search.metric, 0.0) < 0.5]
    if not failures or search.calls + options.proposals + len(dev) > options.budget:
        return best
    texts = await _propose(options, search, str(system), failures, scorers)
    rewrites = [Arm(f"{arm.name}-p{index}", arm.examples, text) for index, text in enumerate(texts)]
    if not rewrites:
        return best
    async with serve_arms(options.settings_file, policy.name, rewrites, scorers, options.cache_dir, concurrency) as s:
        measured = await _dev_round(s, search, rewrites, dev, progress, task)
    return max([best, *measured], key=lambda pair: search.score(pair[1]))


async def _confirm(
    options: OptimizeOptions,
    search: _Search,
    policy: LoadedPolicy,
    serving: str,
    best: tuple[Arm, list[ItemResult]],
    heldout: list[EvalItem],
    scorers: Any,
    concurrency: int,
    report: dict[str, Any],
) -> None:
    arm = best[0]
    async with serve_arms(options.settings_file, policy.name, [arm], scorers, options.cache_dir, concurrency) as s:
        base_results = await s.run(serving, heldout)
        arm_results = await s.run(arm.name, heldout)
    metrics = [search.metric]
    base, cand = summarise(serving, base_results, metrics), summarise(arm.name, arm_results, metrics)
    report["heldout_calls"] = len(heldout) * 2
    for summary, where in ((base, report["baseline"]), (cand, report["winner"])):
        where["heldout_score"] = summary.scores[search.metric]
        where["low"], where["high"] = summary.interval if summary.interval else (None, None)
        if summary.errors:
            search.failed("the held-out confirmation", summary.results)
    report["stopped"] = search.stopped
    if base.measured and cand.measured:
        comparison = compare(cand, base, search.metric)
        report.update(p_value=comparison.p_value, better=comparison.better, worse=comparison.worse)
