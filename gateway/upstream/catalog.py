"""The default upstream's model list, cached briefly and refreshed without blocking requests.

``GET /v1/models`` merges it with the policies, and passthrough metrics use it to label a
client's model name only when the upstream really serves it (anything else is ``other``, which
keeps the ``model`` label bounded whatever clients send).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from gateway.errors import UpstreamError
from gateway.upstream.base import Upstream

__all__ = ["ModelCatalog"]

log = logging.getLogger(__name__)
_RETRY_AFTER_FAILURE_S = 5.0


class ModelCatalog:
    def __init__(self, upstream: Upstream | None, ttl_s: float) -> None:
        self.upstream = upstream
        self.ttl_s = ttl_s
        self._models: list[dict[str, Any]] = []
        self._ids: frozenset[str] = frozenset()
        self._fresh_until = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    @property
    def stale(self) -> bool:
        return time.monotonic() >= self._fresh_until

    async def models(self) -> list[dict[str, Any]]:
        """The upstream's models; on failure the last list known (possibly empty), never an error."""
        if self.upstream is not None and self.stale:
            await asyncio.shield(self._refresh_task())
        return self._models

    def knows(self, model: str) -> bool:
        """Whether the upstream lists ``model``; schedules a refresh in the background when stale."""
        if self.upstream is not None and self.stale:
            self._refresh_task()
        return model in self._ids

    def warm_up(self) -> None:
        """Start loading the list now, so the first passthrough requests are labelled correctly."""
        if self.upstream is not None:
            self._refresh_task()

    def _refresh_task(self) -> asyncio.Task[None]:
        """The refresh under way, or a new one: never two at once."""
        if self._refreshing is None:
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
            self._refreshing.add_done_callback(self._forget_task)
        return self._refreshing

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None

    async def _refresh(self) -> None:
        assert self.upstream is not None
        try:
            models = await self.upstream.list_models(uuid.uuid4().hex)
        except UpstreamError as exc:
            log.warning("model list of upstream %s unavailable: %s", self.upstream.name, exc.message)
            self._fresh_until = time.monotonic() + min(self.ttl_s, _RETRY_AFTER_FAILURE_S)
            return
        self._models = models
        self._ids = frozenset(item["id"] for item in models)
        self._fresh_until = time.monotonic() + self.ttl_s

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
