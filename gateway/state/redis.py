"""Redis-backed shared state: every replica sees one cache and one set of rate-limit counters.

redis-py's asyncio client with a blocking connection pool: a caller waits at most ``timeout_s``
for a connection and for each command. After a fault Redis is skipped for ``down_for_s`` so a
dead Redis costs requests nothing but a failed-open lookup; the client reconnects by itself once
Redis is back. The rate-limit check and increment run as one Lua script, so they are atomic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.metrics import Metrics
from gateway.settings import RedisSettings
from gateway.state.base import WINDOW_S, Decision, StateUnavailable, decide, window_of

__all__ = ["RedisState"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: KEYS: previous window, current window. ARGV: limit, cost, elapsed fraction, ttl.
#: Returns {allowed, previous, current} so the caller can compute Retry-After.
_HIT = """
local previous = tonumber(redis.call('GET', KEYS[1]) or '0')
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
local limit, cost, elapsed = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local count = previous * (1 - elapsed) + current
if count + cost > limit or (cost == 0 and count >= limit) then
  return {0, tostring(previous), tostring(current)}
end
if cost > 0 then
  redis.call('INCRBY', KEYS[2], cost)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return {1, tostring(previous), tostring(current)}
"""


class RedisState:
    name = "redis"

    def __init__(self, url: str, settings: RedisSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.prefix = settings.key_prefix
        self._metrics = metrics
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=settings.max_connections,
            timeout=settings.timeout_s,
            socket_timeout=settings.timeout_s,
            socket_connect_timeout=settings.timeout_s,
            health_check_interval=30,
        )
        self._client: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self._hit_script = self._client.register_script(_HIT)
        self._down_until = 0.0

    async def _run(self, op: str, work: Awaitable[_T]) -> _T:
        """Run one Redis operation under its deadline; any fault becomes ``StateUnavailable``."""
        if time.monotonic() < self._down_until:
            if asyncio.iscoroutine(work):
                work.close()
            raise StateUnavailable("redis was unreachable moments ago")
        try:
            async with asyncio.timeout(self.settings.timeout_s * 2):
                return await work
        except (RedisError, TimeoutError, OSError) as exc:
            self._down_until = time.monotonic() + self.settings.down_for_s
            self._metrics.state_errors.child(self.name, op).inc()
            log.warning("redis %s failed: %s", op, exc.__class__.__name__)
            raise StateUnavailable(f"redis {op} failed: {exc.__class__.__name__}") from exc

    @property
    def client(self) -> aioredis.Redis:
        """The shared client, for stores built on this backend (``gateway.state.feedback``)."""
        return self._client

    async def guarded(self, op: str, work: Awaitable[_T]) -> _T:
        """Run ``work`` under this backend's deadline and fault skipping. Raises ``StateUnavailable``."""
        return await self._run(op, work)

    async def cache_get(self, key: str) -> bytes | None:
        value: Any = await self._run("cache_get", self._client.get(self.prefix + "cache:" + key))
        return value if isinstance(value, bytes) else None

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._run("cache_set", self._client.set(self.prefix + "cache:" + key, value, px=int(ttl_s * 1000)))

    def _window_keys(self, name: str, index: int) -> list[str]:
        base = f"{self.prefix}rl:{name}:"
        return [base + str(index - 1), base + str(index)]

    async def hit(self, name: str, limit: int, cost: int) -> Decision:
        index, elapsed = window_of(time.time())
        keys = self._window_keys(name, index)
        result: Any = await self._run(
            "rate_limit", self._hit_script(keys=keys, args=[limit, cost, repr(elapsed), 2 * WINDOW_S])
        )
        allowed, previous, current = int(result[0]), float(result[1]), float(result[2])
        if allowed:
            return Decision(True)
        return decide(previous, current, elapsed, limit, cost)

    async def add(self, name: str, amount: int) -> None:
        index, _ = window_of(time.time())
        key = self._window_keys(name, index)[1]

        async def incr() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incrby(key, amount)
                pipe.expire(key, 2 * WINDOW_S)
                await pipe.execute()

        await self._run("rate_limit_add", incr())

    async def ping(self) -> bool:
        try:
            return bool(await self._run("ping", self._client.ping()))
        except StateUnavailable:
            return False

    async def close(self) -> None:
        await self._client.aclose()
