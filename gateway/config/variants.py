"""Weighted, sticky variant choice: the same caller always lands on the same arm.

The sticky value is hashed with the policy name (sha256), read as a fraction in [0, 1) and looked
up in the cumulative weights; without a sticky value the fraction is random. Changing one arm's
weight moves only the callers whose fraction crosses a boundary.
"""

from __future__ import annotations

import bisect
import hashlib
import random

__all__ = ["Allocation", "VariantTable"]

_SCALE = float(2**64)


class VariantTable:
    def __init__(self, policy: str, weights: list[float]) -> None:
        total = sum(weights)
        if total <= 0:
            raise ValueError("variant weights must not all be 0")
        self.policy = policy.encode()
        running = 0.0
        self.bounds: list[float] = []
        for weight in weights:
            running += weight / total
            self.bounds.append(running)
        self.bounds[-1] = 1.0
        self.live = [index for index, weight in enumerate(weights) if weight > 0]

    def fraction(self, sticky: str | None) -> float:
        if sticky is None:
            return random.random()
        digest = hashlib.sha256(self.policy + b"\0" + sticky.encode()).digest()
        return int.from_bytes(digest[:8], "big") / _SCALE

    def pick(self, sticky: str | None) -> int:
        """The index of the chosen variant; a zero-weight arm is never picked."""
        index = bisect.bisect_right(self.bounds, self.fraction(sticky))
        index = min(index, len(self.bounds) - 1)
        while index not in self.live:
            index = (index + 1) % len(self.bounds)
        return index


class Allocation:
    """An experiment's current shares and their table, replaced whole on each recomputation, so a
    request reads one consistent table."""

    __slots__ = ("policy", "shares", "table")

    def __init__(self, policy: str, shares: list[float]) -> None:
        self.policy = policy
        self.table = VariantTable(policy, shares)
        self.shares = shares

    def update(self, shares: list[float]) -> None:
        table = VariantTable(self.policy, shares)
        self.table, self.shares = table, shares
