"""Query embeddings batched across requests, with a cache of recent queries.

Embedding one short query costs a few milliseconds of CPU, most of it per ONNX call rather than per
token, so concurrent retrieval requests embedded one by one cap a core at a few hundred requests
per second. ``QueryBatcher`` gives each query to whatever batch runs next: while the model is busy,
queries queue; when it is free, everything queued (up to ``max_batch``) goes into one call. A
lone query therefore waits for nothing, and under load the cost per query falls with the batch.
Recent query texts keep their vectors in a small LRU, so a repeated question skips the model.

One queue per event loop (an embedder may serve several loops, as tests do); the batches of
every loop share the embedder's ``ThreadLane``, which bounds the model calls in flight.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from anyio.lowlevel import RunVar

from gateway.retrieval.threads import ThreadLane

__all__ = ["QueryBatcher"]

_Embed = Callable[[list[str]], list[list[float]]]


@dataclass(slots=True)
class _Queue:
    pending: list[tuple[str, asyncio.Future[list[float]]]] = field(default_factory=list)
    worker: asyncio.Task[None] | None = None


class QueryBatcher:
    """Embeds single queries in shared batches; ``batches`` counts the model calls it made."""

    def __init__(self, embed: _Embed, lane: ThreadLane, *, max_batch: int = 32, cache_size: int = 2048) -> None:
        if max_batch < 1 or cache_size < 0:
            raise ValueError("max_batch must be >= 1 and cache_size >= 0")
        self._embed = embed
        self._lane = lane
        self._max_batch = max_batch
        self._cache_size = cache_size
        self._cache: OrderedDict[str, list[float]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._queues: RunVar[_Queue] = RunVar(f"prefit-query-batcher-{id(self)}")
        self.batches = 0

    async def embed(self, text: str) -> list[float]:
        """The vector of ``text``, from the cache or the next batch. Raises what the model raises."""
        cached = self._cached(text)
        if cached is not None:
            return cached
        queue = self._queue()
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        queue.pending.append((text, future))
        if queue.worker is None:
            queue.worker = asyncio.get_running_loop().create_task(self._drain(queue))
        return await future

    def _queue(self) -> _Queue:
        try:
            return self._queues.get()
        except LookupError:
            queue = _Queue()
            self._queues.set(queue)
            return queue

    async def _drain(self, queue: _Queue) -> None:
        """Run batches until nothing is queued; a batch takes everything queued when it starts."""
        try:
            while queue.pending:
                batch = queue.pending[: self._max_batch]
                del queue.pending[: self._max_batch]
                waiting = [(text, future) for text, future in batch if not future.done()]  # not hung up
                if waiting:
                    await self._run(waiting)
        finally:
            queue.worker = None

    async def _run(self, waiting: list[tuple[str, asyncio.Future[list[float]]]]) -> None:
        texts = list(dict.fromkeys(text for text, _ in waiting))
        self.batches += 1
        try:
            vectors = await self._lane.run(lambda: self._embed(texts))
        except Exception as exc:
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        by_text = dict(zip(texts, vectors, strict=True))
        self._remember(by_text)
        for text, future in waiting:
            if not future.done():
                future.set_result(by_text[text])

    def _cached(self, text: str) -> list[float] | None:
        with self._cache_lock:
            found = self._cache.get(text)
            if found is not None:
                self._cache.move_to_end(text)
            return found

    def _remember(self, vectors: dict[str, list[float]]) -> None:
        if not self._cache_size:
            return
        with self._cache_lock:
            for text, vector in vectors.items():
                self._cache[text] = vector
                self._cache.move_to_end(text)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
