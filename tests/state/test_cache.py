"""The response cache's rules: which requests may read and write it, and what a key depends on."""

from __future__ import annotations

import orjson

from gateway.metrics import Metrics
from gateway.policy import CacheSpec
from gateway.settings import CacheSettings
from gateway.state.base import MemoryState
from gateway.state.cache import NO_CACHE, ResponseCache
from gateway.wire import ChatRequest, parse_chat_request


def _chat(**extra: object) -> ChatRequest:
    return parse_chat_request(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}], **extra}))


def _cache(**settings: object) -> ResponseCache:
    return ResponseCache(MemoryState(10), CacheSettings.model_validate(settings), Metrics())


def test_auto_caches_only_deterministic_requests() -> None:
    cache = _cache()
    assert cache.use(None, _chat(temperature=0), None).active
    assert cache.use(None, _chat(temperature=0.7), None) is NO_CACHE
    assert cache.use(CacheSpec(mode="always"), _chat(temperature=0.7), None).active
    assert cache.use(CacheSpec(mode="never"), _chat(temperature=0), None) is NO_CACHE


def test_cache_control_from_the_client() -> None:
    cache = _cache()
    fresh = cache.use(None, _chat(temperature=0), "no-cache")
    assert (fresh.read, fresh.write) == (False, True)
    assert cache.use(None, _chat(temperature=0), "no-store") is NO_CACHE


def test_a_policy_ttl_overrides_the_settings() -> None:
    assert _cache(ttl_s=60).use(CacheSpec(ttl_s=5), _chat(temperature=0), None).ttl_s == 5


def test_the_key_depends_on_the_upstream_and_the_exact_body() -> None:
    assert ResponseCache.key("a", b"{}") != ResponseCache.key("b", b"{}")
    assert ResponseCache.key("a", b"{}") != ResponseCache.key("a", b"{ }")


async def test_entries_round_trip_and_oversized_ones_are_skipped() -> None:
    cache = _cache(max_entry_bytes=1024)
    await cache.put("k", b"small", 60)
    await cache.put("big", b"x" * 1025, 60)
    assert await cache.get("k") == b"small"
    assert await cache.get("big") is None
