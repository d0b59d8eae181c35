"""What feedback needs to outlive a request: which policy and variant answered it, and the
success counts each experiment arm has gathered.

A request is remembered under its ``x-prefit-request-id`` for ``feedback.remember_s``, from the
moment it is routed (so the record is stored before a quick client can send feedback on the
answer). That is one write per request, so it is kept off the request's path: in process it is a bounded
dict (oldest dropped first); on Redis the writes of a few milliseconds go out together as one
script call from a background task (``benchmarks/feedback_bench.py`` on a busy 2-core machine:
230-340 µs of gateway CPU for a lone write at low traffic, 50-60 µs each for six, 12-13 µs each
for 32), and a lost write only means that request's feedback answers 404. With
Redis, every replica sees every request and every arm's counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.state.base import MemoryState, StateBackend, StateUnavailable
from gateway.state.redis import RedisState

__all__ = ["Answered", "ArmCounts", "FeedbackStore", "MemoryFeedback", "RedisFeedback", "feedback_store"]

log = logging.getLogger(__name__)
_SEP = "\0"
#: How long request records gather before they are written together.
_BATCH_WINDOW_S = 0.002
#: A record can be on its way for a window and a round trip; a miss is looked up once more after this.
_RECHECK_S = 0.05
#: KEYS: request keys. ARGV: one value per key, then the TTL in ms.
_REMEMBER = "for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[i], 'PX', ARGV[#ARGV]) end"


@dataclass(frozen=True, slots=True)
class Answered:
    """Who answered a request."""

    policy: str
    variant: str


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """Feedback one experiment arm received: successes and failures."""

    successes: int = 0
    failures: int = 0

    @property
    def samples(self) -> int:
        return self.successes + self.failures


class FeedbackStore(Protocol):
    def remember(self, request_id: str, answered: Answered) -> None:
        """Note who answered ``request_id``; never waits, never raises."""
        ...

    async def recall(self, request_id: str) -> Answered | None:
        """Who answered ``request_id``, or None when unknown or expired. Raises ``StateUnavailable``."""
        ...

    async def count(self, policy: str, metric: str, variant: str, success: bool) -> None:
        """Add one outcome to an experiment arm. Raises ``StateUnavailable``."""
        ...

    async def counts(self, policy: str, metric: str) -> dict[str, ArmCounts]:
        """Every arm's counts for ``policy``'s experiment on ``metric``. Raises ``StateUnavailable``."""
        ...

    async def close(self) -> None: ...


class MemoryFeedback:
    """One replica's requests and counts, in process."""

    def __init__(self, remember_s: float, max_entries: int) -> None:
        self.remember_s = remember_s
        self.max_entries = max_entries
        self._answered: OrderedDict[str, tuple[float, Answered]] = OrderedDict()
        self._arms: dict[tuple[str, str, str], list[int]] = {}

    def remember(self, request_id: str, answered: Answered) -> None:
        self._answered[request_id] = (time.monotonic() + self.remember_s, answered)
        if len(self._answered) > self.max_entries:
            self._answered.popitem(last=False)

    async def recall(self, request_id: str) -> Answered | None:
        found = self._answered.get(request_id)
        if found is None:
            return None
        if found[0] <= time.monotonic():
            del self._answered[request_id]
            return None
        return found[1]

    async def count(self, policy: str, metric: str, variant: str, success: bool) -> None:
        arm = self._arms.setdefault((policy, metric, variant), [0, 0])
        arm[0 if success else 1] += 1

    async def counts(self, policy: str, metric: str) -> dict[str, ArmCounts]:
        return {
            variant: ArmCounts(s, f) for (p, m, variant), (s, f) in self._arms.items() if (p, m) == (policy, metric)
        }

    async def close(self) -> None:
        self._answered.clear()


class RedisFeedback:
    """Requests and counts in Redis, shared by every replica."""

    def __init__(self, state: RedisState, remember_s: float) -> None:
        self.state = state
        self.prefix = state.prefix
        self.ttl_ms = int(remember_s * 1000)
        self._batch: list[tuple[str, str]] = []
        self._flushes: set[asyncio.Task[None]] = set()
        self._remember_script = state.client.register_script(_REMEMBER)

    def _key(self, request_id: str) -> str:
        return f"{self.prefix}req:{request_id}"

    def remember(self, request_id: str, answered: Answered) -> None:
        self._batch.append((self._key(request_id), answered.policy + _SEP + answered.variant))
        if len(self._batch) == 1:
            task = asyncio.get_running_loop().create_task(self._flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush(self) -> None:
        await asyncio.sleep(_BATCH_WINDOW_S)  # let the requests of the next moments join the batch
        batch, self._batch = self._batch, []
        keys = [key for key, _ in batch]
        args: list[str | int] = [value for _, value in batch]
        try:
            await self.state.guarded("feedback_remember", self._remember_script(keys=keys, args=[*args, self.ttl_ms]))
        except StateUnavailable:
            log.debug("lost %d request records", len(batch))

    async def recall(self, request_id: str) -> Answered | None:
        key = self._key(request_id)
        value: Any = await self.state.guarded("feedback_recall", self.state.client.get(key))
        if not isinstance(value, bytes):  # feedback sent the moment the answer arrived may beat its record
            await asyncio.sleep(_RECHECK_S)
            value = await self.state.guarded("feedback_recall", self.state.client.get(key))
        if not isinstance(value, bytes):
            return None
        policy, _, variant = value.decode().partition(_SEP)
        return Answered(policy, variant)

    def _arms_key(self, policy: str, metric: str) -> str:
        return f"{self.prefix}exp:{policy}:{metric}"

    async def count(self, policy: str, metric: str, variant: str, success: bool) -> None:
        field = variant + _SEP + ("s" if success else "f")
        await self.state.guarded("feedback_count", self.state.client.hincrby(self._arms_key(policy, metric), field, 1))

    async def counts(self, policy: str, metric: str) -> dict[str, ArmCounts]:
        raw: Any = await self.state.guarded(
            "feedback_counts", self.state.client.hgetall(self._arms_key(policy, metric))
        )
        tallies: dict[str, list[int]] = {}
        for field, value in raw.items():
            variant, _, kind = field.decode().partition(_SEP)
            tallies.setdefault(variant, [0, 0])[0 if kind == "s" else 1] = int(value)
        return {variant: ArmCounts(s, f) for variant, (s, f) in tallies.items()}

    async def close(self) -> None:
        for task in list(self._flushes):
            await asyncio.gather(task, return_exceptions=True)


def feedback_store(state: StateBackend, remember_s: float, max_entries: int) -> FeedbackStore:
    """The store on the same backend as the cache and rate limits."""
    if isinstance(state, RedisState):
        return RedisFeedback(state, remember_s)
    assert isinstance(state, MemoryState)
    return MemoryFeedback(remember_s, max_entries)
