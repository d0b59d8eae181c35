"""Circuit-breaker transitions and in-process rate-limit memory, with no network."""

from __future__ import annotations

import asyncio

import pytest

from gateway.engine.resilience import Resilience, Target
from gateway.errors import CircuitOpen, UpstreamUnreachable
from gateway.metrics import Metrics
from gateway.settings import ResilienceSettings
from gateway.state.base import MemoryState
from gateway.upstream.memory import MemoryUpstream


def _upstream() -> MemoryUpstream:
    return MemoryUpstream("up", lambda call: {})


def _resilience(**overrides: float) -> Resilience:
    settings = ResilienceSettings(**{"retries": 0, "breaker_failures": 1, "breaker_reset_s": 0.01, **overrides})  # type: ignore[arg-type]
    return Resilience(settings, Metrics())


async def test_a_cancelled_trial_does_not_keep_the_circuit_open() -> None:
    resilience = _resilience()
    target = Target(_upstream(), None)

    async def fail(target: Target, left: float) -> None:
        raise UpstreamUnreachable("down")

    with pytest.raises(UpstreamUnreachable):
        await resilience.call([target], asyncio.get_running_loop().time() + 60, fail)
    breaker = resilience.breaker("up")
    assert breaker.opened_at is not None
    await asyncio.sleep(0.02)

    async def hang(target: Target, left: float) -> None:
        await asyncio.sleep(60)

    task = asyncio.ensure_future(resilience.call([target], asyncio.get_running_loop().time() + 60, hang))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.allow(), "after an abandoned trial the next caller may try again"


async def test_an_open_circuit_names_the_failure_that_opened_it() -> None:
    resilience = _resilience(breaker_reset_s=60)
    target = Target(_upstream(), None)

    async def refuse(target: Target, left: float) -> None:
        raise UpstreamUnreachable("upstream 'up' is unreachable: connection refused by 127.0.0.1:8000")

    deadline = asyncio.get_running_loop().time() + 60
    with pytest.raises(UpstreamUnreachable):
        await resilience.call([target], deadline, refuse)
    with pytest.raises(CircuitOpen) as caught:
        await resilience.call([target], deadline, refuse)
    assert caught.value.message == (
        "upstream 'up' is failing; its circuit is open "
        "(last failure: upstream 'up' is unreachable: connection refused by 127.0.0.1:8000)"
    )


async def test_reloaded_thresholds_apply_to_existing_breakers() -> None:
    resilience = _resilience()
    breaker = resilience.breaker("up")
    resilience.settings = ResilienceSettings(breaker_failures=3)
    breaker.failed()
    breaker.failed()
    assert breaker.opened_at is None
    breaker.failed()
    assert breaker.opened_at is not None


async def test_memory_rate_limits_forget_idle_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    state = MemoryState(10)
    now = [1_000_000.0]
    monkeypatch.setattr("gateway.state.base.time.time", lambda: now[0])
    for caller in range(100):
        await state.hit(f"key:{caller}:req", 10, 1)
    assert len(state._windows) == 100
    now[0] += 180
    await state.hit("key:new:req", 10, 1)
    assert list(state._windows) == ["key:new:req"]
