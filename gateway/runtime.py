"""Everything a running gateway holds: the current config snapshot and the clients built from it."""

from __future__ import annotations

import logging

from gateway.auth import KeyRing
from gateway.catalog import ModelCatalog
from gateway.config import Config
from gateway.metrics import Metrics
from gateway.upstream import UpstreamPool

__all__ = ["Runtime"]

log = logging.getLogger(__name__)


class Runtime:
    """Owns the upstream pools and key rings; requests read ``config`` once and keep that snapshot."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.metrics = metrics
        self.config = config
        settings = config.settings
        self.upstreams = UpstreamPool(settings.upstreams, metrics)
        default = settings.default_upstream
        self.catalog = ModelCatalog(self.upstreams[default] if default else None, settings.models_cache_s)
        self.gateway_keys = KeyRing(settings.keys)
        self.metrics_keys = KeyRing([settings.metrics_key] if settings.metrics_key else [])
        self.started = False

    def keyrings(self) -> tuple[KeyRing, KeyRing]:
        return self.gateway_keys, self.metrics_keys

    async def start(self) -> None:
        await self.upstreams.start()
        self.catalog.warm_up()
        self.started = True

    async def close(self) -> None:
        self.started = False
        await self.catalog.close()
        await self.upstreams.close()
