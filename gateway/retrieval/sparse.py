"""BM25 term weights for hybrid search: fastembed's ``Qdrant/bm25`` model, run from a bundled folder.

Dense vectors find paraphrases but miss the exact tokens support corpora are full of (error codes,
part numbers, SKUs). Hybrid search adds a sparse vector per chunk whose entries are BM25 term
frequencies; Qdrant applies the inverse document frequency itself (``Modifier.IDF`` on the sparse
vector), so only term frequencies are stored and a growing corpus needs no re-weighting.

fastembed's model is a tokenizer, a Snowball stemmer and a stopword list with no weights; its
folder normally comes from the Hugging Face hub, so Prefit ships it (``model_files/bm25``) and
the encoder works offline. Encoding is pure Python at tens of microseconds per query, so it runs
in whichever thread searches, with no limiter of its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastembed import SparseTextEmbedding

__all__ = ["BUNDLED_BM25_DIR", "SparseEncoder", "SparseVector"]

#: The ``Qdrant/bm25`` model folder shipped inside Prefit (see its NOTICE.md).
BUNDLED_BM25_DIR = Path(__file__).resolve().parent / "model_files" / "bm25"
_MODEL = "Qdrant/bm25"


@dataclass(frozen=True, slots=True)
class SparseVector:
    """Term ids (hashes of stemmed tokens) and their weights, in matching order."""

    indices: tuple[int, ...]
    values: tuple[float, ...]


class SparseEncoder:
    """BM25 sparse vectors for documents (term frequencies) and queries (each term once).

    Thread-safe: the model holds no per-call state. Loaded on first use.
    """

    def __init__(self, model_dir: Path | str = BUNDLED_BM25_DIR) -> None:
        self._model_dir = Path(model_dir)
        self._model: SparseTextEmbedding | None = None
        self._lock = threading.Lock()

    def documents(self, texts: list[str]) -> list[SparseVector]:
        """One term-frequency vector per text, in order."""
        return [_vector(e.indices.tolist(), e.values.tolist()) for e in self._loaded().embed(texts)]

    def query(self, text: str) -> SparseVector:
        """The query's terms, weight 1 each (Qdrant's IDF does the weighting)."""
        embedding = next(iter(self._loaded().query_embed(text)))
        return _vector(embedding.indices.tolist(), embedding.values.tolist())

    def _loaded(self) -> SparseTextEmbedding:
        model = self._model
        if model is None:
            with self._lock:
                if self._model is None:
                    from fastembed import SparseTextEmbedding

                    self._model = SparseTextEmbedding(
                        _MODEL, specific_model_path=str(self._model_dir), local_files_only=True
                    )
                model = self._model
        return model


def _vector(indices: list[int], values: list[float]) -> SparseVector:
    return SparseVector(tuple(int(i) for i in indices), tuple(float(v) for v in values))
