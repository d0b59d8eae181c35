"""Everything a running gateway holds, as one snapshot that a reload replaces whole.

A request reads ``runtime.current`` once and keeps that ``Snapshot`` to its end, so a reload never
changes a request half-way: in-flight requests finish on the config, upstream pool and keys they
started with. A pool the new snapshot no longer uses is closed only after its slowest possible
request is over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config.load import Config
from gateway.engine.resilience import Resilience
from gateway.metrics import Metrics
from gateway.retrieval.resources import ResourceHub
from gateway.serving.auth import KeyRing
from gateway.serving.store_health import StoreHealth
from gateway.state.base import MemoryState, StateBackend
from gateway.state.cache import ResponseCache
from gateway.state.feedback import FeedbackStore, feedback_store
from gateway.state.ratelimit import RateLimiter
from gateway.state.redis import RedisState
from gateway.upstream.catalog import ModelCatalog
from gateway.upstream.pool import UpstreamPool

if TYPE_CHECKING:
    from gateway.serving.tracing import Tracing

__all__ = ["ReloadStatus", "Runtime", "Snapshot"]

log = logging.getLogger(__name__)
_RETIRE_GRACE_S = 5.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: Config
    upstreams: UpstreamPool
    catalog: ModelCatalog
    gateway_keys: KeyRing
    metrics_keys: KeyRing
    admin_keys: KeyRing
    state: StateBackend
    cache: ResponseCache
    limiter: RateLimiter
    feedback: FeedbackStore


@dataclass(slots=True)
class ReloadStatus:
    """The outcome of the last reload, shown by ``/readyz``."""

    ok: bool = True
    at: float = field(default_factory=time.time)
    errors: list[str] = field(default_factory=list)


def _keys(config: Config) -> tuple[KeyRing, KeyRing, KeyRing]:
    settings = config.settings
    metrics_keys = KeyRing([settings.metrics_key] if settings.metrics_key else [])
    return KeyRing(settings.keys), metrics_keys, KeyRing(settings.admin_keys)


def _state(config: Config, metrics: Metrics) -> StateBackend:
    settings = config.settings
    if settings.redis_url:
        return RedisState(settings.redis_url, settings.redis, metrics)
    return MemoryState(settings.cache.max_entries)


def _same_state(a: Config, b: Config) -> bool:
    sa, sb = a.settings, b.settings
    return (sa.redis_url, sa.redis, sa.cache.max_entries) == (sb.redis_url, sb.redis, sb.cache.max_entries)


class Runtime:
    """The live side of a running gateway: snapshots of clients built from each ``Config``, and the
    clients that outlive reloads (the resource hub, the breakers). ``Config`` stays pure data."""

    def __init__(self, config: Config, metrics: Metrics, resources: ResourceHub) -> None:
        self.metrics = metrics
        self.resources = resources
        pool = UpstreamPool(config.settings.upstreams, metrics)
        self.resilience = Resilience(config.settings.resilience, metrics)
        self.store_health = StoreHealth(metrics)
        self._feedback: tuple[StateBackend, FeedbackStore] | None = None
        self.current = self._snapshot(config, pool, self._catalog(config, pool), _state(config, metrics))
        self.started = False
        #: Set by ``create_app`` when settings have ``tracing``; None keeps spans off the request path.
        self.tracing: Tracing | None = None
        self.reload_status = ReloadStatus()
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired: list[tuple[Snapshot, bool, bool]] = []

    def _snapshot(self, config: Config, pool: UpstreamPool, catalog: ModelCatalog, state: StateBackend) -> Snapshot:
        settings = config.settings
        return Snapshot(
            config,
            pool,
            catalog,
            *_keys(config),
            state=state,
            cache=ResponseCache(state, settings.cache, self.metrics),
            limiter=RateLimiter(state, settings.rate_limits, self.metrics),
            feedback=self._feedback_on(state, config),
        )

    def _feedback_on(self, state: StateBackend, config: Config) -> FeedbackStore:
        """One feedback store per state backend, so remembered requests survive a reload."""
        if self._feedback is None or self._feedback[0] is not state:
            settings = config.settings.feedback
            self._feedback = (state, feedback_store(state, settings.remember_s, settings.max_remembered))
        return self._feedback[1]

    @property
    def config(self) -> Config:
        return self.current.config

    @staticmethod
    def _catalog(config: Config, pool: UpstreamPool) -> ModelCatalog:
        default = config.settings.default_upstream
        return ModelCatalog(pool[default] if default else None, config.settings.models_cache_s)

    def keyrings(self) -> tuple[KeyRing, KeyRing, KeyRing]:
        current = self.current
        return current.gateway_keys, current.metrics_keys, current.admin_keys

    async def start(self) -> None:
        await self.current.upstreams.start()
        self.current.catalog.warm_up()
        await self.store_health.check(self.current.config.policies, self.resources)
        self.started = True

    async def apply(self, config: Config) -> None:
        """Serve ``config`` from now on; reuses the upstream pool when upstreams did not change."""
        old = self.current
        same_upstreams = (
            config.settings.upstreams == old.config.settings.upstreams
            and config.settings.default_upstream == old.config.settings.default_upstream
            and config.settings.models_cache_s == old.config.settings.models_cache_s
        )
        if same_upstreams:
            pool, catalog = old.upstreams, old.catalog
        else:
            pool = UpstreamPool(config.settings.upstreams, self.metrics)
            await pool.start()
            catalog = self._catalog(config, pool)
            catalog.warm_up()
        state = old.state if _same_state(config, old.config) else _state(config, self.metrics)
        self.resilience.settings = config.settings.resilience
        self.current = self._snapshot(config, pool, catalog, state)
        if not same_upstreams or state is not old.state:
            self._retire(old, close_pool=not same_upstreams, close_state=state is not old.state)
        await self.store_health.check(config.policies, self.resources)

    def _retire(self, old: Snapshot, *, close_pool: bool, close_state: bool) -> None:
        """Close a replaced pool or state client once every request that may still use it is over."""
        longest = old.config.settings.resilience.request_deadline_s

        async def close_later() -> None:
            await asyncio.sleep(longest + _RETIRE_GRACE_S)
            await _close(old, pool=close_pool, state=close_state)

        task = asyncio.get_running_loop().create_task(close_later())
        self._retiring.add(task)
        entry = (old, close_pool, close_state)
        self._retired.append(entry)

        def done(finished: asyncio.Task[None]) -> None:
            self._retiring.discard(finished)
            if not finished.cancelled() and entry in self._retired:
                self._retired.remove(entry)

        task.add_done_callback(done)

    async def close(self) -> None:
        self.started = False
        for task in list(self._retiring):
            task.cancel()
        for old, close_pool, close_state in self._retired:
            await _close(old, pool=close_pool, state=close_state)
        self._retired.clear()
        await _close(self.current, pool=True, state=True)
        self.resources.close()


async def _close(snapshot: Snapshot, *, pool: bool, state: bool) -> None:
    """Close what a replaced snapshot alone held: its upstream pool (and catalog), its state clients."""
    if pool:
        await snapshot.catalog.close()
        await snapshot.upstreams.close()
    if state:
        await snapshot.feedback.close()
        await snapshot.state.close()
