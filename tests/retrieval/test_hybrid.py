"""Hybrid search (dense + BM25 fused by reciprocal rank) on embedded Qdrant, against dense alone.

The corpus under tests/data/hybrid is a printer manual full of near-identical codes (E-4012,
E-4021, E-4102, ...) that an embedding model tells apart poorly; tests/data/corpus adds the
paraphrase-style shop questions of test_ingest. Figures are recorded in the README.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.retrieval.embedding import Embedder
from gateway.retrieval.ingest import HEADING_SEPARATOR, IngestError, ingest, upgrade_hint
from gateway.retrieval.sparse import SparseEncoder, SparseVector
from gateway.retrieval.vectors import MEMORY, Point, VectorStore, VectorStoreError
from tests.retrieval.test_ingest import QUESTIONS

DATA = Path(__file__).resolve().parents[1] / "data"

CODE_QUESTIONS = [
    ("What does error E-4012 mean?", "E-4012"),
    ("How do I fix E-4021?", "E-4021"),
    ("E-4102 on the display", "E-4102"),
    ("what is E-4120", "E-4120"),
    ("My printer shows E-5530", "E-5530"),
    ("Error E-5503, what now?", "E-5503"),
    ("E-7731 keeps coming back", "E-7731"),
    ("How to clear E-7713", "E-7713"),
    ("Do you sell part PX-220?", "Part PX-220"),
    ("What is PX-202?", "Part PX-202"),
    ("What is in RK-18?", "Part RK-18"),
    ("I need RK-81", "Part RK-81"),
]
PARAPHRASES = [
    ("My printer got very hot and stopped printing", "E-4012"),
    ("The printer cannot read the ink cartridge", "E-4021"),
    ("It says there is no paper but the tray is full", "E-4102"),
    ("Paper is stuck at the back of the printer", "E-4120"),
    ("The printer dropped off my Wi-Fi", "E-5530"),
    ("The software update stopped halfway", "E-5503"),
    ("The scanner light stays dark", "E-7731"),
    ("Double-sided printing unit came loose", "E-7713"),
    ("How do I clean the outside of the printer?", "Cleaning"),
    ("I am going on holiday for a month, what about the ink?", "Storage"),
    ("How should I pack the printer when I move?", "Moving house"),
    ("The hinge of my scanner cover broke", "Part RK-81"),
    ("Pages keep coming out crooked", "Part RK-18"),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def embedder(models: Path) -> Embedder:
    embedder = Embedder(cache_dir=models)
    embedder.load()
    return embedder


@pytest.fixture(scope="module")
def kb(embedder: Embedder) -> Iterator[VectorStore]:
    store = VectorStore(path=MEMORY)
    report = ingest(store, embedder, "kb", [DATA / "hybrid", DATA / "corpus"], progress=False, base_dir=DATA)
    assert report.hybrid
    yield store
    store.close()


def _first(store: VectorStore, embedder: Embedder, question: str, hybrid: bool) -> dict[str, object]:
    sparse = SparseEncoder().query(question) if hybrid else None
    return store.search("kb", embedder.embed([question])[0], top_k=1, sparse=sparse)[0].payload


def _recall_at_1(store: VectorStore, embedder: Embedder, hybrid: bool) -> tuple[int, int]:
    """Right first passages: (code questions, paraphrased questions)."""
    codes = sum(
        str(_first(store, embedder, q, hybrid)["heading"]).split(HEADING_SEPARATOR)[-1] == want
        for q, want in CODE_QUESTIONS
    )
    sections = sum(
        str(_first(store, embedder, q, hybrid)["heading"]).split(HEADING_SEPARATOR)[-1] == want
        for q, want in PARAPHRASES
    )
    sources = sum(
        str(_first(store, embedder, q, hybrid)["source"]).removeprefix("corpus/") == want for q, want in QUESTIONS
    )
    return codes, sections + sources


def test_hybrid_finds_every_code_and_is_no_worse_on_paraphrases(kb: VectorStore, embedder: Embedder) -> None:
    dense_codes, dense_paraphrases = _recall_at_1(kb, embedder, hybrid=False)
    hybrid_codes, hybrid_paraphrases = _recall_at_1(kb, embedder, hybrid=True)

    assert hybrid_codes == len(CODE_QUESTIONS), f"hybrid found {hybrid_codes} of {len(CODE_QUESTIONS)} codes"
    assert hybrid_codes >= dense_codes
    assert hybrid_paraphrases >= dense_paraphrases, (hybrid_paraphrases, dense_paraphrases)


@pytest.mark.parametrize(
    ("top_k", "min_score", "filter"), [(1, None, None), (4, None, None), (3, 0.3, None), (3, None, "error-codes")]
)
def test_the_in_memory_copy_answers_as_qdrant_does(
    kb: VectorStore, embedder: Embedder, top_k: int, min_score: float | None, filter: str | None
) -> None:
    """The numpy path embedded searches use gives what qdrant-client's own query API gives.

    Where BM25 scores tie (a common token such as the "e" of "E-4102"), the two order the tied
    candidates differently, which can swap the last passage; the best passage and its score, and
    all but one of the rest, must agree.
    """
    reference = VectorStore(path=MEMORY, memory_index=False)
    reference.ensure_collection("kb", embedder.dimension)
    for record in kb._scroll("kb", None, True, vectors=True):
        vectors = record.vector if isinstance(record.vector, dict) else {}
        sparse = vectors["bm25"]
        reference.upsert(
            "kb",
            [
                Point(
                    str(record.id),
                    vectors["dense"],
                    record.payload or {},
                    SparseVector(tuple(sparse.indices), tuple(sparse.values)),
                )
            ],
        )
    where = {"source": "hybrid/error-codes.md"} if filter else None
    encoder = SparseEncoder()
    for question, _ in CODE_QUESTIONS + PARAPHRASES:
        vector, sparse = embedder.embed([question])[0], encoder.query(question)
        fast = kb.search("kb", vector, top_k, min_score, where, sparse)
        slow = reference.search("kb", vector, top_k, min_score, where, sparse)
        assert (fast[0].id, fast[0].score) == (slow[0].id, pytest.approx(slow[0].score)), question
        assert len(fast) == len(slow) and len({h.id for h in fast} & {h.id for h in slow}) >= len(slow) - 1, question
    reference.close()


def test_a_query_of_stopwords_only_falls_back_to_dense(kb: VectorStore, embedder: Embedder) -> None:
    sparse = SparseEncoder().query("what is it")
    assert sparse.indices == ()

    hits = kb.search("kb", embedder.embed(["what is it"])[0], top_k=3, sparse=sparse)
    assert len(hits) == 3


def test_filters_apply_to_both_sides_of_a_hybrid_search(kb: VectorStore, embedder: Embedder) -> None:
    question = "What does error E-4012 mean?"
    hits = kb.search(
        "kb",
        embedder.embed([question])[0],
        top_k=5,
        filter={"source": "corpus/returns.md"},
        sparse=SparseEncoder().query(question),
    )

    assert hits and {hit.payload["source"] for hit in hits} == {"corpus/returns.md"}


def test_a_dense_only_collection_keeps_working_and_ingest_says_how_to_upgrade(
    embedder: Embedder, tmp_path: Path
) -> None:
    store = VectorStore(path=MEMORY)
    store.ensure_collection("old", embedder.dimension, hybrid=False)  # what the previous ingest made
    report = ingest(store, embedder, "old", [DATA / "hybrid"], progress=False, base_dir=DATA)

    assert not report.hybrid and not store.is_hybrid("old")
    question = "What does error E-4012 mean?"
    hits = store.search("old", embedder.embed([question])[0], top_k=2, sparse=SparseEncoder().query(question))
    assert len(hits) == 2 and all(-1 <= hit.score <= 1 for hit in hits), "searched dense, with cosine scores"
    assert "--recreate" in upgrade_hint("old")

    upgraded = ingest(store, embedder, "old", [DATA / "hybrid"], recreate=True, progress=False, base_dir=DATA)
    assert upgraded.hybrid and store.is_hybrid("old")
    assert store.count("old") == sum(file.chunks for file in upgraded.files)
    store.close()


def test_a_collection_of_another_width_is_a_clear_error(embedder: Embedder) -> None:
    store = VectorStore(path=MEMORY)
    store.ensure_collection("narrow", 8)
    with pytest.raises(VectorStoreError, match=r"width 8, but the embedding model makes width 384"):
        ingest(store, embedder, "narrow", [DATA / "hybrid"], progress=False, base_dir=DATA)
    store.close()


def test_an_unreadable_file_is_named_and_the_rest_ingested(embedder: Embedder, tmp_path: Path) -> None:
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "care.md").write_text((DATA / "hybrid" / "care.md").read_text())
    # /proc/self/mem is a regular file whose read fails at offset 0, for root too
    os.symlink("/proc/self/mem", corpus / "broken.md")
    store = VectorStore(path=MEMORY)

    report = ingest(store, embedder, "docs", [corpus], progress=False, base_dir=tmp_path)

    assert [(file.source, file.error is not None) for file in report.skipped] == [("docs/broken.md", True)]
    assert "cannot read" in str(report.skipped[0].error)
    assert store.count("docs") == 3
    store.close()


def test_an_empty_corpus_is_an_error_and_creates_nothing(embedder: Embedder, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.md").write_text("\n\n")
    store = VectorStore(path=MEMORY)

    with pytest.raises(IngestError, match="no text to ingest"):
        ingest(store, embedder, "docs", [tmp_path / "empty"], progress=False, base_dir=tmp_path)
    assert not store.collection_exists("docs")
    store.close()


def test_the_cli_names_a_skipped_file_and_fails(tmp_path: Path, embedder: Embedder, models: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "care.md").write_text((DATA / "hybrid" / "care.md").read_text())
    os.symlink("/proc/self/mem", tmp_path / "docs" / "broken.md")

    done = subprocess.run(
        [sys.executable, "-m", "gateway", "ingest", "docs", "docs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PREFIT_MODEL_DIR": str(models)},
    )

    assert done.returncode == 1, done.stderr
    assert "skipped docs/broken.md: cannot read" in done.stderr
    assert "care.md" in done.stdout, "the readable file is ingested and reported"
