"""Rate limits on the in-process backend: per key and per policy, requests and tokens, no sockets."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import RateLimited
from gateway.metrics import Metrics
from gateway.policy import RateLimitSpec
from gateway.settings import Limits, RateLimitSettings
from gateway.state.base import MemoryState
from gateway.state.ratelimit import RateLimiter


def _limiter(per_key: Limits | None = None) -> RateLimiter:
    return RateLimiter(MemoryState(100), RateLimitSettings(per_key=per_key or Limits()), Metrics())


async def test_no_limit_means_nothing_is_counted() -> None:
    limiter = _limiter()
    assert not limiter.applies(None)
    assert limiter.applies(RateLimitSpec(requests_per_minute=1))


async def test_a_policy_limit_is_shared_by_every_caller_and_says_when_to_retry() -> None:
    limiter = _limiter()
    spec = RateLimitSpec(requests_per_minute=2)
    await limiter.admit("a", "bot", spec)
    await limiter.admit("b", "bot", spec)
    with pytest.raises(RateLimited) as refused:
        await limiter.admit("c", "bot", spec)
    assert "the model 'bot'" in refused.value.message
    assert int(refused.value.headers["retry-after"]) >= 0
    await limiter.admit("c", "other", spec)  # another policy has its own window


async def test_a_key_limit_is_per_caller() -> None:
    limiter = _limiter(Limits(requests_per_minute=1))
    await limiter.admit("a", "bot", None)
    await limiter.admit("b", "bot", None)
    with pytest.raises(RateLimited) as refused:
        await limiter.admit("a", "bot", None)
    assert "this API key" in refused.value.message


async def test_tokens_count_once_the_answer_is_in_and_refuse_the_next_request() -> None:
    limiter = _limiter()
    spec = RateLimitSpec(tokens_per_minute=100)
    await limiter.admit("a", "bot", spec)
    limiter.record_tokens("a", "bot", spec, 150)
    await asyncio.gather(*limiter._pending)
    with pytest.raises(RateLimited):
        await limiter.admit("a", "bot", spec)
