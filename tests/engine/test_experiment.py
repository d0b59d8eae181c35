"""Thompson allocation: configured weights until every arm has enough feedback, then most traffic
to the arm most likely best, never less than the floor for any arm."""

from __future__ import annotations

import random

from gateway.config.variants import Allocation
from gateway.engine.experiment import allocate, summarise, winner
from gateway.policy import ExperimentSpec
from gateway.state.feedback import ArmCounts

SPEC = ExperimentSpec(metric="thumbs_up", min_samples=50, floor=0.1)
ARMS = ["a", "b", "c"]


def test_configured_weights_hold_until_every_arm_has_min_samples() -> None:
    counts = {"a": ArmCounts(40, 10), "b": ArmCounts(5, 44)}  # c has none yet
    shares = allocate(ARMS, [1, 1, 2], counts, SPEC, seed=1)
    assert shares == [0.1 + 0.7 * 0.25, 0.1 + 0.7 * 0.25, 0.1 + 0.7 * 0.5]


def test_shares_move_to_the_better_arm_and_every_arm_keeps_its_floor() -> None:
    rng = random.Random(7)
    rates = {"a": 0.2, "b": 0.6, "c": 0.3}
    tallies = {name: [0, 0] for name in ARMS}
    shares = allocate(ARMS, [1, 1, 1], {}, SPEC, seed=0)
    for _ in range(60):  # rounds of simulated traffic, each sent by the current shares
        for _ in range(50):
            arm = rng.choices(ARMS, weights=shares)[0]
            tallies[arm][0 if rng.random() < rates[arm] else 1] += 1
        counts = {name: ArmCounts(s, f) for name, (s, f) in tallies.items()}
        shares = allocate(ARMS, [1, 1, 1], counts, SPEC, seed=0)
    assert shares[1] > 0.7
    assert min(shares) >= 0.1
    assert abs(sum(shares) - 1) < 1e-9
    summary = summarise(ARMS, counts, seed=0)
    assert winner(summary, SPEC) == "b"
    assert summary[1].low < summary[1].mean < summary[1].high


def test_no_winner_while_the_arms_are_close_or_short_of_samples() -> None:
    close = {"a": ArmCounts(50, 50), "b": ArmCounts(52, 48), "c": ArmCounts(49, 51)}
    assert winner(summarise(ARMS, close, seed=0), SPEC) is None
    short = {"a": ArmCounts(1, 20), "b": ArmCounts(30, 0), "c": ArmCounts(1, 20)}
    assert winner(summarise(ARMS, short, seed=0), SPEC) is None


def test_a_sticky_caller_keeps_its_arm_while_shares_change_little() -> None:
    allocation = Allocation("support", [0.5, 0.5])
    before = {f"user-{n}": allocation.table.pick(f"user-{n}") for n in range(1000)}
    assert all(allocation.table.pick(user) == arm for user, arm in before.items())
    allocation.update([0.45, 0.55])
    moved = sum(allocation.table.pick(user) != arm for user, arm in before.items())
    assert 0 < moved < 100  # only callers whose fraction crossed the boundary (about 5%)
