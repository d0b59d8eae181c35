"""Prefit's one door to Qdrant: collections of chunk vectors, written by ingest, searched per request.

By default Qdrant runs embedded (qdrant-client's local mode, files under ``.prefit/qdrant``), so a
single machine needs no extra service; ``url`` (with ``api_key``) points at a Qdrant server or
cluster instead, with the same calls. Embedded mode has properties this module hides:

- its calls are synchronous Python, so every ``a*`` method runs in a worker thread under a bounded
  ``anyio.CapacityLimiter``;
- it is not thread-safe, so calls into one embedded client are serialised by a (re-entrant) lock;
- its search renormalises every stored vector and checks payload filters point by point in Python
  (about 40 ms, and 250 ms with a filter, at 10,000 points on a small machine). Embedded searches
  therefore run on a numpy copy of the collection (``gateway.retrieval.exact.Matrix``, dense and
  hybrid), rebuilt after this store's own writes; no other process can write, since
- its storage admits one process at a time (a file lock): a second process gets
  ``VectorStoreLocked``, whose message says to run Qdrant as a server and set ``qdrant.url``.

Whatever qdrant-client raises becomes a ``VectorStoreError``; a server that does not answer
(refused, unresolvable, timed out) is a ``VectorStoreUnreachable``, so callers can say which.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import httpx
from qdrant_client import QdrantClient, models

from gateway.retrieval.exact import DENSE, SPARSE, Hit, Matrix, depth
from gateway.retrieval.sparse import SparseVector
from gateway.retrieval.store_errors import VectorStoreError, VectorStoreLocked, VectorStoreUnreachable, mismatch
from gateway.retrieval.threads import ThreadLane

__all__ = [
    "DEFAULT_PATH",
    "DENSE",
    "MEMORY",
    "SPARSE",
    "Hit",
    "Point",
    "VectorStore",
    "VectorStoreError",
    "VectorStoreLocked",
    "VectorStoreUnreachable",
    "mismatch",
]

DEFAULT_PATH = Path(".prefit/qdrant")
MEMORY = ":memory:"  # an embedded store that is never written to disk
_UPSERT_BATCH = 256
_SCROLL_PAGE = 1024
_EMBEDDER_KEY = "prefit_embedder"  # collection metadata: which embedder made the vectors
_T = TypeVar("_T")
_Vector = Sequence[float]


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (qdrant-client keeps the transport error in ``source``)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        yield current
        source = getattr(current, "source", None)
        current = source if isinstance(source, BaseException) else (current.__cause__ or current.__context__)


def _store_error(message: str, exc: BaseException) -> VectorStoreError:
    """What qdrant-client raised, as a ``VectorStoreError`` that says whether the server answered."""
    causes = list(_causes(exc))
    if any(isinstance(c, (httpx.TimeoutException, TimeoutError)) for c in causes):
        return VectorStoreUnreachable(f"{message}: the vector store did not answer in time", timed_out=True)
    if any(isinstance(c, (httpx.TransportError, ConnectionError)) for c in causes):
        return VectorStoreUnreachable(f"{message}: the vector store is unreachable ({exc})")
    return VectorStoreError(f"{message}: {exc}")


class Point(NamedTuple):
    """One vector to store, with its id (a UUID string), JSON payload and, for hybrid search, its
    sparse BM25 vector (ignored by a dense-only collection)."""

    id: str
    vector: _Vector
    payload: Mapping[str, Any]
    sparse: SparseVector | None = None


class VectorStore:
    """Embedded Qdrant at ``path`` (the default) or a Qdrant server at ``url``; opened on construction.

    ``path=":memory:"`` keeps an embedded store in memory only. ``memory_index=False`` makes embedded
    searches use qdrant-client's own (slower) search. Raises ``VectorStoreLocked`` when another
    process holds ``path``.
    """

    def __init__(
        self,
        *,
        path: Path | str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        max_concurrency: int = 8,
        memory_index: bool = True,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.embedded = url is None
        self.location = url if url is not None else str(path if path is not None else DEFAULT_PATH)
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.embedded else contextlib.nullcontext()
        )
        self._matrices: dict[str, Matrix] | None = {} if self.embedded and memory_index else None
        self._hybrid: dict[str, bool] = {}  # collection -> has sparse vectors (a layout never changes)
        self._lane = ThreadLane(f"prefit-vectors-{id(self)}", max_concurrency)
        self._client = self._open(url, api_key, timeout_s)

    def _open(self, url: str | None, api_key: str | None, timeout_s: float) -> QdrantClient:
        if url is not None:
            return QdrantClient(url=url, api_key=api_key, timeout=round(timeout_s), check_compatibility=False)
        if self.location != MEMORY:
            Path(self.location).mkdir(parents=True, exist_ok=True)
            self._check_unlocked(Path(self.location) / ".lock")
        try:
            # the lock above makes sharing the SQLite connections between worker threads safe
            return QdrantClient(path=self.location, force_disable_check_same_thread=True)
        except RuntimeError as exc:
            if "already accessed by another instance" not in str(exc):
                raise
            raise self._locked() from exc

    def _check_unlocked(self, lock_file: Path) -> None:
        """Try qdrant-client's own file lock first: when that fails, qdrant-client leaks the open file."""
        import portalocker  # qdrant-client's dependency; it checks for writable folders on import

        if not lock_file.exists():
            return
        with lock_file.open("r+") as handle:
            try:
                portalocker.lock(handle, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING)
            except portalocker.exceptions.LockException as exc:
                raise self._locked() from exc
            portalocker.unlock(handle)

    def _locked(self) -> VectorStoreLocked:
        return VectorStoreLocked(
            f"the embedded Qdrant storage {self.location} is already in use by another process (or another "
            "client in this one); embedded Qdrant admits one process, so for several workers or replicas run "
            "Qdrant as a server and set qdrant.url in prefit.yaml (e.g. qdrant: {url: http://localhost:6333})"
        )

    def close(self) -> None:
        """Release the client (and, embedded, the storage lock)."""
        with self._lock:
            self._client.close()

    def collection_exists(self, name: str) -> bool:
        """Raises ``VectorStoreError`` (``VectorStoreUnreachable`` for a server that does not answer)."""
        try:
            with self._lock:
                return self._client.collection_exists(name)
        except Exception as exc:  # qdrant-client raises ValueError, HTTP and gRPC errors alike
            raise _store_error(f"checking collection {name!r} failed", exc) from exc

    def ensure_collection(self, name: str, dimension: int, *, hybrid: bool = True, embedder: str | None = None) -> None:
        """Create collection ``name`` for cosine search over ``dimension``-wide vectors, unless it exists.

        A new collection is hybrid (named ``dense`` and sparse ``bm25`` vectors, Qdrant applying the
        IDF) unless ``hybrid=False``; it records ``embedder`` (the embedder's identity). Raises
        ``VectorStoreError`` when it exists with another width or another recorded embedder.
        """
        with self._lock:
            if not self._client.collection_exists(name):
                params = models.VectorParams(size=dimension, distance=models.Distance.COSINE)
                metadata = {_EMBEDDER_KEY: embedder} if embedder else None
                if hybrid:
                    sparse = {SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)}
                    self._client.create_collection(
                        name, vectors_config={DENSE: params}, sparse_vectors_config=sparse, metadata=metadata
                    )
                else:
                    self._client.create_collection(name, vectors_config=params, metadata=metadata)
                self._forget(name)
                self._hybrid[name] = hybrid
                return
        recorded = self.embedder_of(name)
        if embedder and recorded and recorded != embedder:
            raise VectorStoreError(mismatch(name, recorded, embedder))
        size = self.dimension(name)
        if size != dimension:
            raise VectorStoreError(
                f"collection {name!r} holds vectors of width {size}, but the embedding model makes width "
                f"{dimension}; ingest into a new collection or delete this one"
            )

    def dimension(self, name: str) -> int | None:
        """The width of the collection's dense vectors (None when it has none Prefit can use)."""
        with self._lock:
            vectors = self._client.get_collection(name).config.params.vectors
        if isinstance(vectors, dict):
            vectors = vectors.get(DENSE)
        return vectors.size if isinstance(vectors, models.VectorParams) else None

    def embedder_of(self, name: str) -> str | None:
        """The identity of the embedder that made the collection (None for one made before it was recorded)."""
        with self._lock:
            metadata = self._client.get_collection(name).config.metadata or {}
        found = metadata.get(_EMBEDDER_KEY)
        return found if isinstance(found, str) else None

    def is_hybrid(self, name: str) -> bool:
        """Whether the collection holds sparse BM25 vectors beside the dense ones (remembered)."""
        known = self._hybrid.get(name)
        if known is None:
            with self._lock:
                params = self._client.get_collection(name).config.params
            known = isinstance(params.vectors, dict) and SPARSE in (params.sparse_vectors or {})
            self._hybrid[name] = known
        return known

    def delete_collection(self, name: str) -> None:
        """Drop collection ``name`` and everything in it (nothing happens when it does not exist)."""
        with self._lock:
            self._client.delete_collection(name)
            self._forget(name)
            self._hybrid.pop(name, None)

    def count(self, name: str) -> int:
        with self._lock:
            return self._client.count(name, exact=True).count

    def upsert(self, name: str, points: Sequence[Point | tuple[str, _Vector, Mapping[str, Any]]]) -> None:
        """Insert or replace ``points`` in collection ``name`` (their sparse vectors too, when hybrid)."""
        hybrid = self.is_hybrid(name)
        given = [point if isinstance(point, Point) else Point(*point) for point in points]
        for start in range(0, len(given), _UPSERT_BATCH):
            batch = [
                models.PointStruct(id=point.id, vector=_stored(point, hybrid), payload=dict(point.payload))
                for point in given[start : start + _UPSERT_BATCH]
            ]
            with self._lock:
                self._client.upsert(name, points=batch, wait=True)
                self._forget(name)

    def delete(self, name: str, ids: Sequence[str] | set[str]) -> None:
        if not ids:
            return
        selector = models.PointIdsList(points=list(ids))
        with self._lock:
            self._client.delete(name, points_selector=selector, wait=True)
            self._forget(name)

    def ids_by_source(self, name: str, source: str) -> set[str]:
        """The ids of every point whose payload ``source`` is ``source``."""
        return {str(record.id) for record in self._scroll(name, _match({"source": source}), False)}

    def source_index(self, name: str) -> dict[str, set[str]]:
        """Every payload ``source`` in the collection, with the ids of its points (one pass)."""
        index: dict[str, set[str]] = {}
        for record in self._scroll(name, None, ["source"]):
            index.setdefault(str((record.payload or {}).get("source", "")), set()).add(str(record.id))
        return index

    def warm(self, name: str) -> None:
        """Build the in-memory copy an embedded search uses now, not on the first request."""
        if self._matrices is not None:
            self._matrix(name)

    def search(
        self,
        name: str,
        vector: _Vector,
        top_k: int,
        min_score: float | None = None,
        filter: Mapping[str, str] | None = None,
        sparse: SparseVector | None = None,
    ) -> list[Hit]:
        """The ``top_k`` best points, best first.

        Dense (no ``sparse``, or a collection without sparse vectors): by cosine similarity, at
        least ``min_score``. Hybrid: the dense and the BM25 candidates fused by reciprocal rank
        in Qdrant's query API (scores are then fusion scores; ``min_score`` still drops dense
        candidates less similar than it, never keyword matches). ``filter`` keeps only points
        whose payload has each key equal to its value (or, for a list value, containing it).
        Raises ``VectorStoreError`` when the search fails.
        """
        try:
            if sparse is not None and sparse.indices and self.is_hybrid(name):
                if self._matrices is not None:
                    return self._matrix(name).fused(vector, sparse, top_k, min_score, filter or {})
                return self._fused(name, vector, sparse, top_k, min_score, filter)
            if self._matrices is not None:
                return self._matrix(name).search(vector, top_k, min_score, filter or {})
            with self._lock:
                response = self._client.query_points(
                    name,
                    query=list(vector),
                    using=DENSE if self.is_hybrid(name) else None,
                    limit=top_k,
                    score_threshold=min_score,
                    query_filter=_match(filter) if filter else None,
                    with_payload=True,
                )
        except VectorStoreError:
            raise
        except Exception as exc:  # qdrant-client raises ValueError, HTTP and gRPC errors alike
            raise _store_error(f"search in collection {name!r} failed", exc) from exc
        return [Hit(str(point.id), point.score, dict(point.payload or {})) for point in response.points]

    def _fused(
        self,
        name: str,
        vector: _Vector,
        sparse: SparseVector,
        top_k: int,
        min_score: float | None,
        filter: Mapping[str, str] | None,
    ) -> list[Hit]:
        where = _match(filter) if filter else None
        deep = depth(top_k)
        prefetch = [
            models.Prefetch(query=list(vector), using=DENSE, limit=deep, score_threshold=min_score, filter=where),
            models.Prefetch(
                query=models.SparseVector(indices=list(sparse.indices), values=list(sparse.values)),
                using=SPARSE,
                limit=deep,
                filter=where,
            ),
        ]
        with self._lock:
            response = self._client.query_points(
                name,
                prefetch=prefetch,
                query=models.FusionQuery(fusion=models.Fusion.RRF),
                limit=top_k,
                with_payload=True,
            )
        return [Hit(str(point.id), point.score, dict(point.payload or {})) for point in response.points]

    async def asearch(
        self,
        name: str,
        vector: _Vector,
        top_k: int,
        min_score: float | None = None,
        filter: Mapping[str, str] | None = None,
        sparse: SparseVector | None = None,
    ) -> list[Hit]:
        """``search`` in a worker thread, so the event loop keeps serving."""
        return await self._off_loop(lambda: self.search(name, vector, top_k, min_score, filter, sparse))

    async def aembedder_of(self, name: str) -> str | None:
        """``embedder_of`` in a worker thread."""
        return await self._off_loop(lambda: self.embedder_of(name))

    async def acollection_exists(self, name: str) -> bool:
        """``collection_exists`` in a worker thread (for readiness checks)."""
        return await self._off_loop(lambda: self.collection_exists(name))

    async def _off_loop(self, call: Callable[[], _T]) -> _T:
        return await self._lane.run(call)

    def _forget(self, name: str) -> None:
        if self._matrices is not None:
            self._matrices.pop(name, None)

    def _matrix(self, name: str) -> Matrix:
        assert self._matrices is not None
        matrix = self._matrices.get(name)
        if matrix is None:
            with self._lock:  # held through the whole scroll, so no write lands halfway
                if not self._client.collection_exists(name):
                    raise VectorStoreError(f"collection {name!r} does not exist; ingest into it first")
                matrix = self._matrices.get(name) or Matrix.build(list(self._scroll(name, None, True, vectors=True)))
                self._matrices[name] = matrix
        return matrix

    def _scroll(
        self, name: str, scroll_filter: models.Filter | None, payload: bool | list[str], *, vectors: bool = False
    ) -> Iterator[models.Record]:
        offset: models.ExtendedPointId | None = None
        while True:
            with self._lock:
                records, offset = self._client.scroll(
                    name,
                    scroll_filter=scroll_filter,
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=payload,
                    with_vectors=vectors,
                )
            yield from records
            if offset is None:
                return


def _stored(point: Point, hybrid: bool) -> models.VectorStruct:
    """A point's vectors as its collection's layout wants them: named (hybrid) or the one unnamed."""
    if not hybrid:
        return list(point.vector)
    named: dict[str, models.Vector] = {DENSE: list(point.vector)}
    if point.sparse is not None and point.sparse.indices:
        named[SPARSE] = models.SparseVector(indices=list(point.sparse.indices), values=list(point.sparse.values))
    return named


def _match(conditions: Mapping[str, str]) -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key=key, match=models.MatchValue(value=value)) for key, value in conditions.items()]
    )
