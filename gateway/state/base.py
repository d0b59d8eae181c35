"""Shared state behind one interface: the response cache and rate-limit counters.

``MemoryState`` keeps both in the process (the default, one replica). ``RedisState`` (in
``gateway.state.redis``) shares them across replicas. Either way a fault in the state backend is
raised as ``StateUnavailable`` and callers decide: the cache fails open (a miss), rate limits fail
open or closed by setting.

Rate limits use a sliding window of one minute, approximated from two fixed windows: the count is
the current window's plus the previous window's weighted by how much of it still overlaps.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

__all__ = ["WINDOW_S", "Decision", "MemoryState", "StateBackend", "StateUnavailable", "decide"]

WINDOW_S = 60


class StateUnavailable(Exception):
    """The state backend did not answer in time or at all."""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0


def window_of(now: float) -> tuple[int, float]:
    """The current window's index and how far into it ``now`` is (0..1)."""
    index = int(now // WINDOW_S)
    return index, (now - index * WINDOW_S) / WINDOW_S


def decide(previous: float, current: float, elapsed: float, limit: int, cost: int) -> Decision:
    """Whether ``cost`` more fits under ``limit``, and if not roughly when it will."""
    count = previous * (1.0 - elapsed) + current
    if count + cost <= limit and not (cost == 0 and count >= limit):
        return Decision(True)
    excess = count + max(cost, 1) - limit
    if previous > 0 and excess <= previous * (1.0 - elapsed):
        wait = excess * WINDOW_S / previous
    else:
        wait = (1.0 - elapsed) * WINDOW_S + (WINDOW_S if current + cost > limit else 0)
    return Decision(False, max(1.0, math.ceil(wait)))


class StateBackend(Protocol):
    name: str

    async def cache_get(self, key: str) -> bytes | None: ...

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def hit(self, name: str, limit: int, cost: int) -> Decision:
        """Count ``cost`` against ``name``'s window if it fits; ``cost`` 0 only checks."""
        ...

    async def add(self, name: str, amount: int) -> None:
        """Count ``amount`` without checking (tokens, known only after the answer)."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryState:
    """In-process state: an LRU cache with expiry, and per-window counters."""

    name = "memory"

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._cache: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._windows: dict[str, dict[int, int]] = {}
        self._pruned_at = -1

    async def cache_get(self, key: str) -> bytes | None:
        found = self._cache.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= time.monotonic():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return value

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._cache[key] = (time.monotonic() + ttl_s, value)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def _counts(self, name: str, index: int) -> dict[int, int]:
        if index != self._pruned_at:
            self._prune(index)
        windows = self._windows.setdefault(name, {})
        for stale in [i for i in windows if i < index - 1]:
            del windows[stale]
        return windows

    def _prune(self, index: int) -> None:
        """Once per window, forget callers with no recent count: without keys every client address is
        a caller, and their counters must not pile up."""
        self._pruned_at = index
        for name in [n for n, w in self._windows.items() if all(i < index - 1 for i in w)]:
            del self._windows[name]

    async def hit(self, name: str, limit: int, cost: int) -> Decision:
        index, elapsed = window_of(time.time())
        windows = self._counts(name, index)
        decision = decide(windows.get(index - 1, 0), windows.get(index, 0), elapsed, limit, cost)
        if decision.allowed and cost:
            windows[index] = windows.get(index, 0) + cost
        return decision

    async def add(self, name: str, amount: int) -> None:
        index, _ = window_of(time.time())
        windows = self._counts(name, index)
        windows[index] = windows.get(index, 0) + amount

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._cache.clear()
