"""The embedder and the vector store, shared by every policy and opened on first use.

One ``ResourceHub`` lives as long as the process: hot reloads keep it, because embedded Qdrant
admits a single client per storage folder. It is configured from the first settings it sees; a
later change of ``qdrant`` or ``embedding`` settings takes a restart (and is logged as such).
Nothing is opened until a request (or ``prefit ingest``) needs it, so a gateway whose policies
use no retrieval never loads the model.

Failures reach layers as ``ResourceError`` with a bounded ``reason`` (see ``middleware.base``), so
the metrics and ``/readyz`` can say why a retrieval could not run.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.retrieval.embedding import Embedder, EmbeddingError, SentenceEmbedder, default_cache_dir
from gateway.retrieval.remote import UpstreamEmbedder
from gateway.retrieval.sparse import SparseEncoder
from gateway.retrieval.store_errors import VectorStoreError, VectorStoreLocked, VectorStoreUnreachable, mismatch
from gateway.settings import EmbeddingSettings, QdrantSettings, Settings, UpstreamSettings
from middleware.base import Passage, ResourceError

if TYPE_CHECKING:
    from gateway.retrieval.vectors import VectorStore

__all__ = ["NO_RESOURCES", "ResourceHub", "Unavailable"]

log = logging.getLogger(__name__)


def _reason(exc: VectorStoreError) -> str:
    """The bounded reason for a vector-store failure."""
    if isinstance(exc, VectorStoreLocked):
        return "store_locked"
    if isinstance(exc, VectorStoreUnreachable):
        return "timeout" if exc.timed_out else "store_unreachable"
    return "other"


def _missing(collection: str) -> ResourceError:
    return ResourceError(
        f"collection {collection!r} does not exist (run `prefit ingest {collection} ...`)", "collection_missing"
    )


class Unavailable:
    """``Resources`` for a configuration loaded only to be checked (``prefit check``): building layers
    needs no client, and a search through it says why there is none instead of opening a store."""

    async def embed(self, texts: list[str]) -> list[list[float]]:
        raise ResourceError("this configuration was loaded without an embedder", "other")

    async def search(
        self,
        collection: str,
        vector: list[float],
        top_k: int,
        min_score: float | None,
        filter: dict[str, str] | None,
        text: str | None = None,
    ) -> list[Passage]:
        raise ResourceError("this configuration was loaded without a vector store", "other")


NO_RESOURCES = Unavailable()


class ResourceHub:
    """Implements ``middleware.base.Resources`` over fastembed and qdrant-client.

    Whoever runs the gateway (``prefit serve``, ``render``, ``eval``, ``ingest``) owns one hub:
    creates it, hands it to ``load_config`` so layers are built against it, configures it from the
    loaded settings, and closes it. ``Config`` itself holds no client.
    """

    def __init__(self) -> None:
        self._qdrant: QdrantSettings | None = None
        self._embedding: EmbeddingSettings | None = None
        self._base_dir = Path.cwd()
        self._upstreams: dict[str, UpstreamSettings] = {}
        self._embedder: SentenceEmbedder | None = None
        self._store: VectorStore | None = None
        self._made_by: dict[str, str | None] = {}  # collection -> the embedder it records
        self._sparse = SparseEncoder()
        self._lock = threading.Lock()

    def configure(self, settings: Settings, base_dir: Path) -> None:
        """Adopt the first settings seen; later different ones only warn (they need a restart)."""
        with self._lock:
            if self._qdrant is None:
                self._qdrant, self._embedding, self._base_dir = settings.qdrant, settings.embedding, base_dir
                self._upstreams = dict(settings.upstreams)
            elif (self._qdrant, self._embedding) != (settings.qdrant, settings.embedding):
                log.warning("qdrant or embedding settings changed: restart the gateway to apply them")

    def embedder(self) -> SentenceEmbedder:
        with self._lock:
            if self._embedder is None:
                spec = self._embedding or EmbeddingSettings()
                if spec.upstream is not None and spec.model is not None:
                    upstream = self._upstreams[spec.upstream]
                    self._embedder = UpstreamEmbedder(spec.upstream, upstream, spec.model)
                    return self._embedder
                cache = Path(spec.cache_dir) if spec.cache_dir else default_cache_dir()
                self._embedder = Embedder(
                    cache_dir=cache if cache.is_absolute() else self._base_dir / cache,
                    model_dir=spec.model_dir,
                    max_concurrency=spec.max_concurrency,
                )
            return self._embedder

    def store(self) -> VectorStore:
        """The vector store, opened on first use (qdrant-client is imported only then)."""
        from gateway.retrieval.vectors import VectorStore

        with self._lock:
            if self._store is None:
                spec = self._qdrant or QdrantSettings()
                if spec.url:
                    key = spec.api_key.get_secret_value() if spec.api_key else None
                    self._store = VectorStore(url=spec.url, api_key=key)
                else:
                    path = Path(spec.path or ".prefit/qdrant")
                    self._store = VectorStore(path=path if path.is_absolute() else self._base_dir / path)
            return self._store

    def _identity(self) -> str:
        """The configured embedder's identity, without loading any model."""
        spec = self._embedding or EmbeddingSettings()
        if spec.upstream is not None:
            return f"upstream:{spec.upstream}/{spec.model}"
        return Embedder(model_dir=spec.model_dir).identity

    async def _check_embedder(self, store: VectorStore, collection: str) -> None:
        """Raises ``ResourceError`` when the collection was made by another embedder."""
        if collection not in self._made_by:
            self._made_by[collection] = await store.aembedder_of(collection)
        recorded, current = self._made_by[collection], self._identity()
        if recorded is not None and recorded != current:
            raise ResourceError(mismatch(collection, recorded, current), "embedder_mismatch")

    async def embed(self, texts: list[str]) -> list[list[float]]:
        try:
            if len(texts) == 1:  # a request's query: batched with other requests', and cached
                return [await self.embedder().aembed_query(texts[0])]
            return await self.embedder().aembed(texts)
        except EmbeddingError as exc:
            raise ResourceError(f"embedding failed: {exc}", "embed_failed") from exc

    async def search(
        self,
        collection: str,
        vector: list[float],
        top_k: int,
        min_score: float | None,
        filter: dict[str, str] | None,
        text: str | None = None,
    ) -> list[Passage]:
        try:
            store = self.store()
            if not await store.acollection_exists(collection):
                raise _missing(collection)
            await self._check_embedder(store, collection)
            sparse = self._sparse.query(text) if text else None
            hits = await store.asearch(collection, vector, top_k, min_score, filter, sparse)
        except VectorStoreError as exc:
            raise ResourceError(f"vector search failed: {exc}", _reason(exc)) from exc
        return [Passage(str(hit.id), float(hit.score), dict(hit.payload)) for hit in hits]

    async def probe(self, collection: str) -> ResourceError | None:
        """Why a search of ``collection`` could not run now (store locked or down, collection
        missing), or None; opens the store but never loads the embedding model."""
        try:
            store = self.store()
            if not await store.acollection_exists(collection):
                return _missing(collection)
            await self._check_embedder(store, collection)
        except ResourceError as exc:
            return exc
        except VectorStoreError as exc:
            return ResourceError(f"the vector store cannot be used: {exc}", _reason(exc))
        return None

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
