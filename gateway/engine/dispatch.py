"""How one request reaches its answer: the response cache first, then the upstream with retries,
its circuit breaker and the policy's fallbacks, all inside the request's deadline.

Routing hands a ``Dispatch``'s ``send`` and ``open_stream`` to the pipeline, so layers that re-ask
(output validation) go through the same cache and resilience as the first call.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from pydantic import BaseModel

from gateway.engine.pipeline import ask_for_usage, strip_usage
from gateway.engine.pricing import cost_usd
from gateway.engine.record import Exchange
from gateway.engine.resilience import Resilience, Target
from gateway.errors import UpstreamTimeout
from gateway.policy import CacheSpec
from gateway.settings import Price
from gateway.state.cache import NO_CACHE, ResponseCache
from gateway.wire import ChatRequest, dump_body
from middleware.base import close_stream

__all__ = ["Dispatch"]


class Dispatch:
    """Per request: where to send, what may be cached, and how long there is."""

    def __init__(
        self,
        path: str,
        targets: list[Target],
        exchange: Exchange,
        resilience: Resilience,
        deadline_s: float,
        cache: ResponseCache | None = None,
        cache_spec: CacheSpec | None = None,
        cache_control: str | None = None,
        label_model: bool = True,
        prices: Mapping[str, Price] | None = None,
    ) -> None:
        self.path = path
        self.targets = targets
        self.exchange = exchange
        self.resilience = resilience
        self.deadline = time.monotonic() - (time.perf_counter() - exchange.start) + deadline_s
        self.cache = cache
        self.cache_spec = cache_spec
        self.cache_control = cache_control
        self.cache_use = NO_CACHE
        self.label_model = label_model
        self.prices = prices or {}

    def _serialiser(self, body: BaseModel) -> Callable[[Target], bytes]:
        """``body`` as bytes for a target, serialised once per target however often it is sent
        (the cache key, then every retry)."""
        done: dict[int, bytes] = {}

        def raw(target: Target) -> bytes:
            found = done.get(id(target))
            if found is None:
                copy = body if target.model is None else body.model_copy(update={"model": target.model})
                found = done[id(target)] = dump_body(copy)
            return found

        return raw

    def _answered_by(self, target: Target, body: BaseModel) -> None:
        """Label metrics with what answered; a passthrough model name keeps its bounded label."""
        self.exchange.upstream = target.upstream.name
        if target.model is not None:
            self.exchange.model = target.model
        elif self.label_model:
            self.exchange.model = str(getattr(body, "model", self.exchange.model))

    def _account(self, target: Target, body: BaseModel, usage: object) -> None:
        """Tokens and, where the model has a price, spend: both from the upstream's own usage; an
        answer without usage is counted as such, so the gap in tokens and spend shows."""
        if not isinstance(usage, dict):
            self.exchange.usage_missing += 1
            return
        self.exchange.add_usage(usage)
        priced = target.model or str(getattr(body, "model", ""))
        self.exchange.add_cost(self.exchange.model, cost_usd(self.prices, priced, usage))

    def _cache_key(self, body: BaseModel, raw: Callable[[Target], bytes]) -> str | None:
        if self.cache is None or not isinstance(body, ChatRequest):
            return None
        self.cache_use = self.cache.use(self.cache_spec, body, self.cache_control)
        if not self.cache_use.active:
            return None
        return self.cache.key(self.targets[0].upstream.name, raw(self.targets[0]))

    async def _cached(self, key: str | None) -> bytes | None:
        if key is None or self.cache is None:
            return None
        if not self.cache_use.read:
            self.cache.count_bypass()
            self.exchange.cache = "bypass"
            return None
        value = await self.cache.get(key)
        self.exchange.cache = "hit" if value is not None else "miss"
        return value

    async def send(self, body: BaseModel) -> dict[str, Any]:
        """A whole answer. Raises ``UpstreamError`` when every attempt failed."""
        raw = self._serialiser(body)
        key = self._cache_key(body, raw)
        stored = await self._cached(key)
        if stored is not None:
            reply: dict[str, Any] = orjson.loads(stored)
            return reply
        request_id = self.exchange.request_id

        async def attempt(target: Target, left: float) -> dict[str, Any]:
            return await target.upstream.complete(self.path, raw(target), request_id, left)

        target, reply = await self.resilience.call(self.targets, self.deadline, attempt)
        self._answered_by(target, body)
        self._account(target, body, reply.get("usage"))
        if key is not None and self.cache is not None and target is self.targets[0]:
            await self.cache.put(key, orjson.dumps(reply), self.cache_use.ttl_s)
        return reply

    async def open_stream(self, body: BaseModel) -> AsyncIterator[dict[str, Any]]:
        """Chunks of a streamed answer, from the cache or the first upstream that starts one.

        A chat stream always asks the upstream for its usage chunk, so tokens and spend are
        counted; when the client did not ask for it, it is stripped again on the way out.
        """
        strip = False
        if isinstance(body, ChatRequest):
            body, strip = ask_for_usage(body)
        chunks = await self._open_stream(body)
        return strip_usage(chunks) if strip else chunks

    async def _open_stream(self, body: BaseModel) -> AsyncIterator[dict[str, Any]]:
        raw = self._serialiser(body)
        key = self._cache_key(body, raw)
        stored = await self._cached(key)
        if stored is not None:
            return _replay(orjson.loads(stored))
        request_id = self.exchange.request_id

        async def attempt(target: Target, left: float) -> AsyncIterator[dict[str, Any]]:
            return await target.upstream.open_stream(self.path, raw(target), request_id, left)

        target, chunks = await self.resilience.call(self.targets, self.deadline, attempt)
        self._answered_by(target, body)
        store = key if target is self.targets[0] else None
        return self._tee(chunks, store, target, body)

    async def _tee(
        self, chunks: AsyncIterator[dict[str, Any]], key: str | None, target: Target, body: BaseModel
    ) -> AsyncIterator[dict[str, Any]]:
        """Pass chunks on, count their usage, and cache the whole list once the stream ended cleanly.

        The read timeout bounds each silence; this bounds the whole stream by the request deadline.
        A stream that asked for usage and ended without it (llama.cpp ignores ``include_usage``) is
        counted as an answer without usage.
        """
        kept: list[dict[str, Any]] | None = [] if key is not None else None
        counted = False
        try:
            async for chunk in chunks:
                if time.monotonic() > self.deadline:
                    raise UpstreamTimeout("the request's deadline passed while the answer was streaming")
                usage = chunk.get("usage")
                if usage:
                    self._account(target, body, usage)
                    counted = True
                if kept is not None:
                    kept.append(chunk)
                yield chunk
        finally:
            await close_stream(chunks)
        if not counted and _asks_for_usage(body):
            self.exchange.usage_missing += 1
        if key is not None and kept is not None and self.cache is not None and _finished(kept):
            await self.cache.put(key, orjson.dumps(kept), self.cache_use.ttl_s)


def _asks_for_usage(body: BaseModel) -> bool:
    options = getattr(body, "stream_options", None)
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _finished(chunks: list[dict[str, Any]]) -> bool:
    """Whether a stream ran to its end (some choice finished): a stream cut short is never cached."""
    return any(
        isinstance(choice, dict) and choice.get("finish_reason")
        for chunk in chunks
        for choice in chunk.get("choices") or ()
    )


async def _replay(chunks: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for chunk in chunks:
        yield chunk
