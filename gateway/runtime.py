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

from gateway.auth import KeyRing
from gateway.catalog import ModelCatalog
from gateway.config import Config
from gateway.metrics import Metrics
from gateway.upstream import UpstreamPool

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


class Runtime:
    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.metrics = metrics
        pool = UpstreamPool(config.settings.upstreams, metrics)
        self.current = Snapshot(config, pool, self._catalog(config, pool), *_keys(config))
        self.started = False
        self.reload_status = ReloadStatus()
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def config(self) -> Config:
        return self.current.config

    @staticmethod
    def _catalog(config: Config, pool: UpstreamPool) -> ModelCatalog:
        default = config.settings.default_upstream
        return ModelCatalog(pool[default] if default else None, config.settings.models_cache_s)

    def keyrings(self) -> tuple[KeyRing, KeyRing]:
        current = self.current
        return current.gateway_keys, current.metrics_keys

    async def start(self) -> None:
        await self.current.upstreams.start()
        self.current.catalog.warm_up()
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
        self.current = Snapshot(config, pool, catalog, *_keys(config))
        if not same_upstreams:
            self._retire(old)

    def _retire(self, old: Snapshot) -> None:
        """Close a replaced pool once every request that may still use it has hit its deadline."""
        longest = max((u.timeout_s for u in old.config.settings.upstreams.values()), default=0.0)

        async def close_later() -> None:
            await asyncio.sleep(longest + _RETIRE_GRACE_S)
            await old.catalog.close()
            await old.upstreams.close()

        task = asyncio.get_running_loop().create_task(close_later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        self.started = False
        for task in list(self._retiring):
            task.cancel()
        await self.current.catalog.close()
        await self.current.upstreams.close()
