"""Blocking work (the embedding model, embedded Qdrant) run in worker threads, a bounded number at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

__all__ = ["ThreadLane"]

_T = TypeVar("_T")


class ThreadLane:
    """At most ``capacity`` calls of one owner in threads at a time.

    A ``CapacityLimiter`` belongs to one event loop (and tests run several), so each loop gets its own.
    """

    def __init__(self, name: str, capacity: int) -> None:
        self._capacity = capacity
        self._limiter: RunVar[anyio.CapacityLimiter] = RunVar(name)

    def _current(self) -> anyio.CapacityLimiter:
        try:
            return self._limiter.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(self._capacity)
            self._limiter.set(limiter)
            return limiter

    async def run(self, call: Callable[[], _T]) -> _T:
        return await anyio.to_thread.run_sync(call, limiter=self._current())
