"""Dispatch against the in-memory upstream: cache, retries, fallbacks, usage and cost, no sockets."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from gateway.engine.dispatch import Dispatch
from gateway.engine.record import Exchange
from gateway.engine.resilience import Resilience, Target
from gateway.errors import UpstreamStatus
from gateway.metrics import Metrics
from gateway.policy import CacheSpec
from gateway.settings import CacheSettings, Price, ResilienceSettings
from gateway.state.base import MemoryState
from gateway.state.cache import ResponseCache
from gateway.upstream.base import Upstream
from gateway.upstream.memory import MemoryCall, MemoryUpstream
from gateway.wire import ChatRequest, parse_chat_request

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def _reply(call: MemoryCall) -> dict[str, Any]:
    return {
        "id": "r1",
        "object": "chat.completion",
        "model": call.body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": USAGE,
    }


def _chunks(call: MemoryCall) -> list[dict[str, Any]]:
    delta = {"id": "c", "object": "chat.completion.chunk", "model": call.body["model"]}
    return [
        {**delta, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}]},
        {**delta, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**delta, "choices": [], "usage": USAGE},
    ]


def _exchange() -> Exchange:
    return Exchange("req-1", "POST", "/v1/chat/completions", time.perf_counter())


def _dispatch(targets: list[Target], exchange: Exchange, **options: Any) -> Dispatch:
    resilience = Resilience(ResilienceSettings(retries=1, backoff_s=0.001, backoff_max_s=0.002), Metrics())
    return Dispatch("/chat/completions", targets, exchange, resilience, 30.0, **options)


def _chat(**extra: Any) -> ChatRequest:
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}], **extra}
    return parse_chat_request(orjson.dumps(body))


def test_the_memory_upstream_implements_the_seam() -> None:
    upstream: Upstream = MemoryUpstream("m", _reply)
    assert isinstance(upstream, Upstream)


async def test_a_whole_answer_counts_usage_and_spend() -> None:
    upstream = MemoryUpstream("main", _reply)
    exchange = _exchange()
    prices = {"gpt-x": Price(input=1.0, output=2.0)}
    reply = await _dispatch([Target(upstream, None)], exchange, prices=prices).send(_chat())
    assert reply["choices"][0]["message"]["content"] == "hi"
    assert (exchange.prompt_tokens, exchange.completion_tokens) == (10, 5)
    assert exchange.cost_usd == pytest.approx((10 * 1.0 + 5 * 2.0) / 1_000_000)
    assert [call.body["messages"] for call in upstream.calls] == [[{"role": "user", "content": "hello"}]]
    assert upstream.calls[0].request_id == "req-1"


async def test_a_failing_upstream_is_retried_then_the_fallback_answers() -> None:
    def unavailable(call: MemoryCall) -> dict[str, Any]:
        raise UpstreamStatus(503, b'{"error": {"message": "busy"}}', "application/json", "busy")

    primary, backup = MemoryUpstream("primary", unavailable), MemoryUpstream("backup", _reply)
    exchange = _exchange()
    targets = [Target(primary, None), Target(backup, "backup-model")]
    reply = await _dispatch(targets, exchange).send(_chat())
    assert len(primary.calls) == 2, "one retry on a 503"
    assert [call.body["model"] for call in backup.calls] == ["backup-model"]
    assert reply["model"] == "backup-model"
    assert (exchange.upstream, exchange.model) == ("backup", "backup-model")


async def test_a_client_error_is_not_retried() -> None:
    def bad(call: MemoryCall) -> dict[str, Any]:
        raise UpstreamStatus(400, b"{}", "application/json", "bad request")

    upstream = MemoryUpstream("main", bad)
    with pytest.raises(UpstreamStatus):
        await _dispatch([Target(upstream, None)], _exchange()).send(_chat())
    assert len(upstream.calls) == 1


async def test_an_identical_deterministic_request_is_answered_from_the_cache() -> None:
    upstream = MemoryUpstream("main", _reply)
    cache = ResponseCache(MemoryState(100), CacheSettings(), Metrics())
    first, second = _exchange(), _exchange()
    for exchange in (first, second):
        options = {"cache": cache, "cache_spec": CacheSpec()}
        await _dispatch([Target(upstream, None)], exchange, **options).send(_chat(temperature=0))
    assert len(upstream.calls) == 1
    assert (first.cache, second.cache) == ("miss", "hit")


async def test_a_stream_asks_for_usage_and_strips_it_for_a_client_that_did_not() -> None:
    upstream = MemoryUpstream("main", _chunks)
    exchange = _exchange()
    chunks = await _dispatch([Target(upstream, None)], exchange).open_stream(_chat(stream=True))
    received = [chunk async for chunk in chunks]
    assert upstream.calls[0].body["stream_options"] == {"include_usage": True}
    assert all("usage" not in chunk for chunk in received)
    assert (exchange.prompt_tokens, exchange.completion_tokens) == (10, 5)
