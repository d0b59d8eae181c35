"""Keeps every experiment's allocation current: every ``feedback.refresh_s`` it reads each arm's
counts from the feedback store (shared through Redis, so every replica computes from the same
posterior) and replaces the policy's variant table. Requests only read the table; none waits for
a recomputation."""

from __future__ import annotations

import asyncio
import logging
import random

from gateway.config.load import LoadedPolicy
from gateway.engine.experiment import allocate
from gateway.serving.runtime import Runtime
from gateway.state.base import StateUnavailable
from gateway.state.feedback import ArmCounts

__all__ = ["ExperimentRefresher"]

log = logging.getLogger(__name__)


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
            try:
                await self.refresh()
            except Exception:
                log.exception("experiment refresh failed")
            period = self.runtime.config.settings.feedback.refresh_s
            await asyncio.sleep(period * random.uniform(0.9, 1.1))  # replicas drift apart, not in lockstep

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
