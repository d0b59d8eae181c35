"""Adaptive variant weights: Beta-Bernoulli Thompson sampling over production feedback.

Each arm's success rate has a Beta(1 + successes, 1 + failures) posterior. An arm's share of
traffic is its probability of being the best arm (estimated by drawing from every posterior at
once, Monte Carlo), mixed with a floor so no arm is starved. Until every arm has ``min_samples``
outcomes the configured weights stand. The allocation is recomputed periodically, not per
request, and is looked up with the caller's sticky fraction like fixed weights are, so a caller
keeps its arm unless the boundaries move past it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.policy import ExperimentSpec
from gateway.state.feedback import ArmCounts

if TYPE_CHECKING:  # numpy is imported when an experiment is first summarised, not at start-up
    import numpy as np

__all__ = ["DECIDED_AT", "ArmSummary", "allocate", "summarise", "winner"]

_DRAWS = 20_000
#: The probability of being best at which a winner is called (once every arm has min_samples).
DECIDED_AT = 0.95


@dataclass(frozen=True, slots=True)
class ArmSummary:
    """One arm's posterior as ``prefit experiments`` shows it."""

    variant: str
    successes: int
    failures: int
    mean: float
    low: float
    high: float
    p_best: float

    @property
    def samples(self) -> int:
        return self.successes + self.failures


def _draws(arms: Sequence[ArmCounts], rng: np.random.Generator) -> np.ndarray:
    import numpy as np

    alpha = np.array([1 + arm.successes for arm in arms], dtype=float)
    beta = np.array([1 + arm.failures for arm in arms], dtype=float)
    return rng.beta(alpha, beta, size=(_DRAWS, len(arms)))


def _p_best(draws: np.ndarray) -> np.ndarray:
    import numpy as np

    best = np.argmax(draws, axis=1)
    shares: np.ndarray = np.bincount(best, minlength=draws.shape[1]) / draws.shape[0]
    return shares


def summarise(variants: Sequence[str], counts: Mapping[str, ArmCounts], seed: int | None = None) -> list[ArmSummary]:
    """Each arm's samples, posterior mean, 95% interval and probability of being best."""
    import numpy as np

    arms = [counts.get(name, ArmCounts()) for name in variants]
    draws = _draws(arms, np.random.default_rng(seed))
    p_best = _p_best(draws)
    low, high = np.quantile(draws, [0.025, 0.975], axis=0)
    return [
        ArmSummary(
            name,
            arm.successes,
            arm.failures,
            (1 + arm.successes) / (2 + arm.samples),
            float(low[i]),
            float(high[i]),
            float(p_best[i]),
        )
        for i, (name, arm) in enumerate(zip(variants, arms, strict=True))
    ]


def winner(summary: Sequence[ArmSummary], spec: ExperimentSpec) -> str | None:
    """The arm that is best with probability ``DECIDED_AT``, once every arm has ``min_samples``."""
    if any(arm.samples < spec.min_samples for arm in summary):
        return None
    best = max(summary, key=lambda arm: arm.p_best)
    return best.variant if best.p_best >= DECIDED_AT else None


def allocate(
    variants: Sequence[str],
    weights: Sequence[float],
    counts: Mapping[str, ArmCounts],
    spec: ExperimentSpec,
    seed: int | None = None,
) -> list[float]:
    """Each arm's share of traffic: the configured weights until every arm has ``min_samples``,
    then the floor plus the rest split by probability of being best."""
    if any(counts.get(name, ArmCounts()).samples < spec.min_samples for name in variants):
        total = sum(weights)
        shares = [weight / total for weight in weights]
    else:
        shares = [arm.p_best for arm in summarise(variants, counts, seed)]
    spare = 1.0 - spec.floor * len(variants)
    return [spec.floor + spare * share for share in shares]
