"""Prefit's one door to Qdrant: collections of chunk vectors, written by ingest, searched per request.

By default Qdrant runs embedded (qdrant-client's local mode, files under ``.prefit/qdrant``), so a
single machine needs no extra service; ``url`` (with ``api_key``) points at a Qdrant server or
cluster instead, with the same calls. Embedded mode has three properties this module hides:

- its calls are synchronous Python (search is a numpy scan, payload filters are checked in Python),
  so every ``a*`` method runs the call in a worker thread under a bounded ``anyio.CapacityLimiter``;
- it is not thread-safe, so calls on one embedded store are serialised by a lock;
- its storage admits one process at a time (a file lock), so a second process gets
  ``VectorStoreLocked``, whose message says to run Qdrant as a server and set ``qdrant.url``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar
from qdrant_client import QdrantClient, models

__all__ = ["DEFAULT_PATH", "Hit", "Point", "VectorStore", "VectorStoreError", "VectorStoreLocked"]

DEFAULT_PATH = Path(".prefit/qdrant")
_UPSERT_BATCH = 256
_SCROLL_PAGE = 1024
_T = TypeVar("_T")


class VectorStoreError(RuntimeError):
    """The vector store cannot be opened or a collection does not fit the request."""


class VectorStoreLocked(VectorStoreError):
    """Another process holds the embedded storage folder."""


class Point(NamedTuple):
    """One vector to store, with its id (a UUID string) and JSON payload."""

    id: str
    vector: Sequence[float]
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: the point's id, its cosine similarity to the query, and its payload."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


class VectorStore:
    """Embedded Qdrant at ``path`` (the default) or a Qdrant server at ``url``; opened on construction.

    Raises ``VectorStoreLocked`` when another process holds ``path``.
    """

    def __init__(
        self,
        *,
        path: Path | str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        max_concurrency: int = 8,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.embedded = url is None
        self.location = url if url is not None else str(Path(path) if path is not None else DEFAULT_PATH)
        # an embedded store runs one call at a time anyway, so more threads would only queue on the lock
        self._max_concurrency = 1 if self.embedded else max_concurrency
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.embedded else contextlib.nullcontext()
        )
        self._limiter: RunVar[anyio.CapacityLimiter] = RunVar(f"prefit-vectors-{id(self)}")
        self._client = self._open(url, api_key, timeout_s)

    def _open(self, url: str | None, api_key: str | None, timeout_s: float) -> QdrantClient:
        if url is not None:
            return QdrantClient(url=url, api_key=api_key, timeout=round(timeout_s), check_compatibility=False)
        Path(self.location).mkdir(parents=True, exist_ok=True)
        try:
            # the lock above makes sharing the SQLite connections between worker threads safe
            return QdrantClient(path=self.location, force_disable_check_same_thread=True)
        except RuntimeError as exc:
            if "already accessed by another instance" not in str(exc):
                raise
            raise VectorStoreLocked(
                f"the embedded Qdrant storage {self.location} is already in use by another process "
                "(or another client in this one); "
                "embedded Qdrant admits one process, so for several workers or replicas run Qdrant as a "
                "server and set qdrant.url in prefit.yaml (e.g. qdrant: {url: http://localhost:6333})"
            ) from exc

    def close(self) -> None:
        """Release the client (and, embedded, the storage lock)."""
        with self._lock:
            self._client.close()

    def collection_exists(self, name: str) -> bool:
        with self._lock:
            return self._client.collection_exists(name)

    def ensure_collection(self, name: str, dimension: int) -> None:
        """Create collection ``name`` for cosine search over ``dimension``-wide vectors, unless it exists.

        Raises ``VectorStoreError`` when it exists with another width (the embedding model changed).
        """
        with self._lock:
            if not self._client.collection_exists(name):
                params = models.VectorParams(size=dimension, distance=models.Distance.COSINE)
                self._client.create_collection(name, vectors_config=params)
                return
            existing = self._client.get_collection(name).config.params.vectors
        size = existing.size if isinstance(existing, models.VectorParams) else None
        if size != dimension:
            raise VectorStoreError(
                f"collection {name!r} holds vectors of width {size}, but the embedding model makes width "
                f"{dimension}; ingest into a new collection or delete this one"
            )

    def count(self, name: str) -> int:
        with self._lock:
            return self._client.count(name, exact=True).count

    def upsert(self, name: str, points: Sequence[Point | tuple[str, Sequence[float], Mapping[str, Any]]]) -> None:
        """Insert or replace ``points`` (id, vector, payload) in collection ``name``."""
        for start in range(0, len(points), _UPSERT_BATCH):
            batch = [
                models.PointStruct(id=point_id, vector=list(vector), payload=dict(payload))
                for point_id, vector, payload in points[start : start + _UPSERT_BATCH]
            ]
            with self._lock:
                self._client.upsert(name, points=batch, wait=True)

    def delete(self, name: str, ids: Sequence[str] | set[str]) -> None:
        if not ids:
            return
        selector = models.PointIdsList(points=list(ids))
        with self._lock:
            self._client.delete(name, points_selector=selector, wait=True)

    def ids_by_source(self, name: str, source: str) -> set[str]:
        """The ids of every point whose payload ``source`` is ``source``."""
        return {point_id for point_id, _ in self._scroll(name, _match({"source": source}), [])}

    def source_index(self, name: str) -> dict[str, set[str]]:
        """Every payload ``source`` in the collection, with the ids of its points (one pass)."""
        index: dict[str, set[str]] = {}
        for point_id, payload in self._scroll(name, None, ["source"]):
            index.setdefault(str(payload.get("source", "")), set()).add(point_id)
        return index

    def search(
        self,
        name: str,
        vector: Sequence[float],
        top_k: int,
        min_score: float | None = None,
        filter: Mapping[str, str] | None = None,
    ) -> list[Hit]:
        """The ``top_k`` most similar points, best first, scoring at least ``min_score``.

        ``filter`` keeps only points whose payload has each key equal to its value.
        """
        with self._lock:
            response = self._client.query_points(
                name,
                query=list(vector),
                limit=top_k,
                score_threshold=min_score,
                query_filter=_match(filter) if filter else None,
                with_payload=True,
            )
        return [Hit(str(point.id), point.score, dict(point.payload or {})) for point in response.points]

    async def asearch(
        self,
        name: str,
        vector: Sequence[float],
        top_k: int,
        min_score: float | None = None,
        filter: Mapping[str, str] | None = None,
    ) -> list[Hit]:
        """``search`` in a worker thread, so the event loop keeps serving."""
        return await self._off_loop(lambda: self.search(name, vector, top_k, min_score, filter))

    async def acollection_exists(self, name: str) -> bool:
        """``collection_exists`` in a worker thread (for readiness checks)."""
        return await self._off_loop(lambda: self.collection_exists(name))

    async def _off_loop(self, call: Callable[[], _T]) -> _T:
        return await anyio.to_thread.run_sync(call, limiter=self._current_limiter())

    def _current_limiter(self) -> anyio.CapacityLimiter:
        """This event loop's limiter (a limiter belongs to one loop; tests run several)."""
        try:
            return self._limiter.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(self._max_concurrency)
            self._limiter.set(limiter)
            return limiter

    def _scroll(
        self, name: str, scroll_filter: models.Filter | None, fields: list[str]
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        offset: models.ExtendedPointId | None = None
        while True:
            with self._lock:
                records, offset = self._client.scroll(
                    name,
                    scroll_filter=scroll_filter,
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=fields if fields else False,
                )
            for record in records:
                yield str(record.id), dict(record.payload or {})
            if offset is None:
                return


def _match(conditions: Mapping[str, str]) -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key=key, match=models.MatchValue(value=value)) for key, value in conditions.items()]
    )
