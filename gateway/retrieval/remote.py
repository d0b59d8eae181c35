"""Embeddings from an upstream's ``/v1/embeddings`` instead of the in-process model.

For a deployment that outgrows one machine's CPU, settings ``embedding: {upstream: NAME, model:
MODEL}`` sends queries and ingested chunks to an OpenAI-compatible embedding server (TEI, vLLM,
OpenAI). ``UpstreamEmbedder`` has the in-process ``Embedder``'s interface: ``embed`` is a blocking
call (ingest), ``aembed``/``aembed_query`` run it in a worker thread, queries of concurrent
requests batched into one call and recent ones cached (``gateway.retrieval.batching``).
Vectors are L2-normalised here, whatever the server returns, so cosine search behaves the same.
"""

from __future__ import annotations

import math

import httpx

from gateway.retrieval.batching import QueryBatcher
from gateway.retrieval.embedding import EmbeddingError
from gateway.retrieval.threads import ThreadLane
from gateway.settings import UpstreamSettings

__all__ = ["UpstreamEmbedder"]

_BATCH = 64  # texts per request


class UpstreamEmbedder:
    """Sentence vectors from ``upstream`` (named ``name`` in settings) for ``model``."""

    def __init__(self, name: str, upstream: UpstreamSettings, model: str, *, max_concurrency: int = 4) -> None:
        self.identity = f"upstream:{name}/{model}"
        self._url = upstream.base_url.rstrip("/") + "/embeddings"
        self._model = model
        headers = dict(upstream.headers)
        if upstream.api_key is not None:
            headers["Authorization"] = f"Bearer {upstream.api_key.get_secret_value()}"
        timeout = httpx.Timeout(upstream.timeout_s, connect=upstream.connect_timeout_s)
        self._client = httpx.Client(headers=headers, timeout=timeout)
        self._dimension = 0
        self._lane = ThreadLane(f"prefit-upstream-embedder-{id(self)}", max_concurrency)
        self._queries = QueryBatcher(self.embed, self._lane)

    @property
    def dimension(self) -> int:
        """The width of the upstream's vectors (one probe call the first time). Raises ``EmbeddingError``."""
        if not self._dimension:
            self._dimension = len(self.embed(["dimension probe"])[0])
        return self._dimension

    @property
    def batches(self) -> int:
        return self._queries.batches

    def load(self) -> None:
        """Check now that the upstream answers (at startup, say). Raises ``EmbeddingError``."""
        _ = self.dimension

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One unit-length vector per text, in order; blocking. Raises ``EmbeddingError``."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), _BATCH):
            vectors.extend(self._request(texts[start : start + _BATCH]))
        return vectors

    async def aembed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return await self._lane.run(lambda: self.embed(texts))

    async def aembed_query(self, text: str) -> list[float]:
        return await self._queries.embed(text)

    def close(self) -> None:
        self._client.close()

    def _request(self, texts: list[str]) -> list[list[float]]:
        where = f"embedding upstream {self.identity.removeprefix('upstream:')}"
        try:
            reply = self._client.post(self._url, json={"model": self._model, "input": texts})
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"{where} did not answer: {exc}") from exc
        if reply.status_code >= 400:
            raise EmbeddingError(f"{where} answered {reply.status_code}: {reply.text[:200]}")
        try:
            rows = sorted(reply.json()["data"], key=lambda row: row["index"])
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(f"{where} sent no embeddings in the OpenAI shape: {exc}") from exc
        if len(vectors) != len(texts):
            raise EmbeddingError(f"{where} sent {len(vectors)} vectors for {len(texts)} texts")
        return [_unit(vector) for vector in vectors]


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]
