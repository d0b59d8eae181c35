"""The exact response cache: an identical final upstream request gets the stored answer.

The key is a hash of the upstream's name and the exact body Prefit would send it (after every
layer), so a changed prompt, example set or variant can never be served a stale answer. A policy
caches deterministic requests (temperature 0) by default, or always, or never. Streamed answers
are stored as their chunk list and replayed as SSE. A backend fault is a miss: caching fails open.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

from gateway.metrics import Metrics
from gateway.policy import CacheSpec
from gateway.settings import CacheSettings
from gateway.state.base import StateBackend, StateUnavailable
from gateway.wire import ChatRequest, get_param

__all__ = ["CacheUse", "ResponseCache"]

log = logging.getLogger(__name__)
HIT, MISS, BYPASS, ERROR = "hit", "miss", "bypass", "error"


@dataclass(frozen=True, slots=True)
class CacheUse:
    """What one request may do with the cache."""

    read: bool
    write: bool
    ttl_s: float

    @property
    def active(self) -> bool:
        return self.read or self.write


NO_CACHE = CacheUse(False, False, 0.0)


def _deterministic(body: ChatRequest) -> bool:
    return bool(get_param(body, "temperature") == 0)


class ResponseCache:
    def __init__(self, state: StateBackend, settings: CacheSettings, metrics: Metrics) -> None:
        self.state = state
        self.settings = settings
        self.metrics = metrics

    def use(self, spec: CacheSpec | None, body: ChatRequest, cache_control: str | None) -> CacheUse:
        """Whether this request reads and writes the cache, by policy, determinism and ``Cache-Control``."""
        mode = spec.mode if spec is not None else "auto"
        if not self.settings.enabled or mode == "never" or (mode == "auto" and not _deterministic(body)):
            return NO_CACHE
        directives = {part.strip().lower() for part in (cache_control or "").split(",")}
        ttl = spec.ttl_s if spec is not None and spec.ttl_s is not None else self.settings.ttl_s
        if "no-store" in directives:
            return NO_CACHE
        return CacheUse(read="no-cache" not in directives, write=True, ttl_s=ttl)

    @staticmethod
    def key(upstream: str, body: bytes) -> str:
        return hashlib.sha256(upstream.encode() + b"\0" + body).hexdigest()

    async def get(self, key: str) -> bytes | None:
        """The stored answer, or None on a miss or a backend fault (counted as ``error``)."""
        start = time.perf_counter()
        try:
            value = await self.state.cache_get(key)
        except StateUnavailable:
            self.metrics.cache_requests.child(ERROR).inc()
            return None
        finally:
            self.metrics.observe_stage("cache", time.perf_counter() - start)
        self.metrics.cache_requests.child(HIT if value is not None else MISS).inc()
        return value

    def count_bypass(self) -> None:
        self.metrics.cache_requests.child(BYPASS).inc()

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        if len(value) > self.settings.max_entry_bytes:
            return
        try:
            await self.state.cache_set(key, value, ttl_s)
        except StateUnavailable:
            log.debug("cache write skipped: backend unavailable")
