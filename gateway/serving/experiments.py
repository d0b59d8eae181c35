"""Keeps every experiment's allocation current: every ``feedback.refresh_s`` it reads each arm's
counts from the feedback store (shared through Redis, so every replica computes from the same
posterior) and replaces the policy's variant table. Requests only read the table; none waits for
a recomputation."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from rich.table import Table

from gateway.config.load import Config, LoadedPolicy
from gateway.engine.experiment import ArmSummary, allocate, summarise, winner
from gateway.metrics import Metrics
from gateway.policy import ExperimentSpec
from gateway.serving.runtime import Runtime
from gateway.state.base import StateUnavailable
from gateway.state.feedback import ArmCounts, feedback_store
from gateway.state.redis import RedisState

__all__ = ["ExperimentRefresher", "ExperimentReport", "experiment_report", "report_table"]

log = logging.getLogger(__name__)
#: How often the refresher looks for a reload, whose new policies start from the configured weights.
_RELOAD_CHECK_S = 0.25


class ExperimentRefresher:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Recompute every experiment's shares once; a store fault keeps the shares they had."""
        snapshot = self.runtime.current
        for policy in snapshot.config.policies.values():
            if policy.allocation is None or policy.spec.experiment is None:
                continue
            try:
                counts = await snapshot.feedback.counts(policy.name, policy.spec.experiment.metric)
            except StateUnavailable:
                continue
            shares = await asyncio.to_thread(_shares, policy, counts)
            policy.allocation.update(shares)
            for variant, share in zip(policy.variants, shares, strict=True):
                self.runtime.metrics.experiment_share.child(policy.name, variant.name).set(share)

    async def _run(self) -> None:
        while True:
            refreshed = self.runtime.current
            try:
                await self.refresh()
            except Exception:
                log.exception("experiment refresh failed")
            period = refreshed.config.settings.feedback.refresh_s * random.uniform(0.9, 1.1)  # no lockstep
            waited = 0.0
            while waited < period and self.runtime.current is refreshed:  # a reload starts new tables: at once
                step = min(_RELOAD_CHECK_S, period - waited)
                await asyncio.sleep(step)
                waited += step

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _shares(policy: LoadedPolicy, counts: dict[str, ArmCounts]) -> list[float]:
    assert policy.spec.experiment is not None
    names, weights = [v.name for v in policy.variants], [v.weight for v in policy.variants]
    return allocate(names, weights, counts, policy.spec.experiment)


@dataclass(frozen=True, slots=True)
class ExperimentReport:
    """What ``prefit experiments POLICY`` prints."""

    policy: str
    spec: ExperimentSpec
    arms: list[ArmSummary]
    shares: list[float]
    winner: str | None


async def experiment_report(config: Config, name: str) -> ExperimentReport:
    """Read ``name``'s arm counts from Redis and summarise them. Raises ``ValueError``, ``StateUnavailable``."""
    policy = config.policies.get(name)
    if policy is None or policy.spec.experiment is None:
        raise ValueError(f"the model '{name}' has no experiment")
    settings = config.settings
    if not settings.redis_url:
        raise ValueError("without redis_url each gateway keeps its own counts; set redis_url to share and read them")
    state = RedisState(settings.redis_url, settings.redis, Metrics())
    try:
        store = feedback_store(state, settings.feedback.remember_s, 1)
        counts = await store.counts(policy.name, policy.spec.experiment.metric)
    finally:
        await state.close()
    spec = policy.spec.experiment
    names = [v.name for v in policy.variants]
    arms = summarise(names, counts)
    shares = allocate(names, [v.weight for v in policy.variants], counts, spec)
    return ExperimentReport(policy.name, spec, arms, shares, winner(arms, spec))


def report_table(report: ExperimentReport) -> Table:
    spec = report.spec
    table = Table(
        title=f"{report.policy}: {spec.metric} (Thompson, min {spec.min_samples} per arm, floor {spec.floor:g})",
        caption=f"winner: {report.winner}" if report.winner else "no winner decided yet",
    )
    for column in ("variant", "samples", "successes", "mean", "95% interval", "P(best)", "share"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for arm, share in zip(report.arms, report.shares, strict=True):
        table.add_row(
            arm.variant,
            str(arm.samples),
            str(arm.successes),
            f"{arm.mean:.3f}",
            f"{arm.low:.3f}-{arm.high:.3f}",
            f"{arm.p_best:.3f}",
            f"{share:.3f}",
        )
    return table
