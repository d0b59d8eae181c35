"""``prefit ingest`` for real: the corpus under tests/data is chunked, embedded and searched."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from gateway.retrieval.embedding import Embedder
from gateway.retrieval.ingest import IngestError, IngestReport, ingest, report_table
from gateway.retrieval.vectors import VectorStore

DATA = Path(__file__).resolve().parents[1] / "data"
CORPUS_CHUNKS = 34

QUESTIONS = [
    ("How long do I have to return an item?", "returns.md"),
    ("When will I get my money back after a return?", "returns.md"),
    ("Can I return a monogrammed towel?", "returns.md"),
    ("How much does express delivery cost?", "shipping.md"),
    ("Is shipping free?", "shipping.md"),
    ("My tracking page has not updated in days", "shipping.md"),
    ("How long is the warranty on a sofa?", "warranty.html"),
    ("Does the warranty cover damage from my cat?", "warranty.html"),
    ("My lamp stopped working, is it covered?", "warranty.html"),
    ("I forgot my password", "accounts.txt"),
    ("How do I delete my account?", "accounts.txt"),
    ("Can I turn on two-factor authentication?", "accounts.txt"),
    ("Can I pay with PayPal?", "payments.md"),
    ("Can I pay in instalments?", "payments.md"),
    ("When is my credit card charged?", "payments.md"),
    ("How do I get a VAT invoice for my company?", "payments.md"),
    ("How long is a gift card valid?", "gift-cards.txt"),
    ("Can I exchange a gift card for cash?", "gift-cards.txt"),
    ("How many loyalty points do I earn per euro?", "loyalty.md"),
    ("What do I get at Gold tier?", "loyalty.md"),
    ("Do you ship to the United States?", "international.md"),
    ("Will I pay customs duties in the UK?", "international.md"),
    ("Can I pick up my order in a store?", "store-pickup.html"),
    ("How long do you keep my click and collect order?", "store-pickup.html"),
    ("How should I wash linen sheets?", "product-care.md"),
    ("How do I care for an oak table?", "product-care.md"),
    ("What are your customer service opening hours?", "customer-care.txt"),
    ("What is your phone number?", "customer-care.txt"),
    ("Do you offer furniture assembly?", "faq.jsonl"),
    ("Do you match lower prices from other shops?", "faq.jsonl"),
]


@pytest.fixture(scope="session")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    embedder = Embedder(cache_dir=tmp_path_factory.mktemp("models"))
    embedder.load()
    return embedder


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A private copy of the corpus, free to change, under ``tmp_path/corpus``."""
    shutil.copytree(DATA / "corpus", tmp_path / "corpus")
    return tmp_path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VectorStore]:
    store = VectorStore(path=tmp_path / "qdrant")
    yield store
    store.close()


@pytest.fixture(scope="module")
def searchable(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[VectorStore]:
    """The corpus ingested once into collection ``docs``, for the retrieval questions."""
    root = tmp_path_factory.mktemp("searchable")
    store = VectorStore(path=root / "qdrant")
    ingest(store, embedder, "docs", [DATA / "corpus"], progress=False, base_dir=DATA)
    yield store
    store.close()


def _run(store: VectorStore, embedder: Embedder, workdir: Path, *, prune: bool = False) -> IngestReport:
    return ingest(store, embedder, "docs", [workdir / "corpus"], prune=prune, progress=False, base_dir=workdir)


def _by_source(report: IngestReport) -> dict[str, tuple[int, int, int]]:
    return {file.source: (file.added, file.unchanged, file.removed) for file in report.files}


def _top_sources(store: VectorStore, embedder: Embedder, question: str, k: int = 4) -> list[str]:
    hits = store.search("docs", embedder.embed([question])[0], top_k=k)
    return [hit.payload["source"].removeprefix("corpus/") for hit in hits]


@pytest.mark.parametrize(("question", "source"), QUESTIONS, ids=[q for q, _ in QUESTIONS])
def test_each_question_finds_its_source_in_the_top_4(
    searchable: VectorStore, embedder: Embedder, question: str, source: str
) -> None:
    assert source in _top_sources(searchable, embedder, question)


def test_most_questions_find_their_source_first(searchable: VectorStore, embedder: Embedder) -> None:
    first = sum(_top_sources(searchable, embedder, question, k=1) == [source] for question, source in QUESTIONS)

    assert first >= 27, f"only {first} of {len(QUESTIONS)} questions ranked their source first"


def test_payloads_carry_text_source_heading_chunk_and_metadata(searchable: VectorStore, embedder: Embedder) -> None:
    lamp = searchable.search("docs", embedder.embed(["Is a faulty lamp repaired?"])[0], top_k=1)[0].payload
    price = searchable.search("docs", embedder.embed(["price promise"])[0], top_k=1)[0].payload

    assert lamp["source"] == "corpus/warranty.html"
    assert lamp["heading"] == "Product warranty \u203a Lamps and electrical items", "the whole heading path"
    assert lamp["kind"] == "passage"
    assert isinstance(lamp["chunk"], int)
    assert lamp["text"].startswith(
        "Product warranty \u203a Lamps and electrical items\n"
        "Lamps, fairy lights and other electrical items have a two-year warranty."
    ), "the stored text keeps its heading path"
    assert price["source"] == "corpus/faq.jsonl"
    assert (price["topic"], price["audience"]) == ("pricing", "consumer")
    assert searchable.count("docs") == CORPUS_CHUNKS


def test_html_scripts_and_styles_are_not_ingested(searchable: VectorStore, embedder: Embedder) -> None:
    texts = {hit.payload["text"] for hit in searchable.search("docs", embedder.embed(["javascript"])[0], top_k=50)}

    assert not [text for text in texts if "analytics" in text or "font-family" in text or "querySelector" in text]


def test_a_second_run_over_unchanged_files_writes_nothing(
    store: VectorStore, embedder: Embedder, workdir: Path
) -> None:
    first = _run(store, embedder, workdir)
    storage = sorted((workdir / "qdrant").rglob("*.sqlite"))
    stamps = [path.stat().st_mtime_ns for path in storage]
    # the same model, but its tokenizer files are missing: any attempt to embed would raise
    unusable = Embedder(cache_dir=workdir / "models", tokenizer_dir=workdir / "no-tokenizer-here")

    second = _run(store, unusable, workdir)

    assert (first.added, first.unchanged, first.removed) == (CORPUS_CHUNKS, 0, 0)
    assert (second.added, second.unchanged, second.removed) == (0, CORPUS_CHUNKS, 0)
    assert [path.stat().st_mtime_ns for path in storage] == stamps
    assert store.count("docs") == CORPUS_CHUNKS


def test_a_changed_file_replaces_its_old_chunks(store: VectorStore, embedder: Embedder, workdir: Path) -> None:
    _run(store, embedder, workdir)
    shipping = workdir / "corpus" / "shipping.md"
    shipping.write_text(shipping.read_text().replace("costs 4.95 euro", "costs 5.45 euro"))

    report = _run(store, embedder, workdir)

    changed = {source: counts for source, counts in _by_source(report).items() if counts[0] or counts[2]}
    assert changed == {"corpus/shipping.md": (1, 2, 1)}
    texts = [hit.payload["text"] for hit in store.search("docs", embedder.embed(["shipping costs"])[0], top_k=40)]
    assert any("costs 5.45 euro" in text for text in texts)
    assert not any("costs 4.95 euro" in text for text in texts)
    assert store.count("docs") == CORPUS_CHUNKS


def test_prune_removes_the_chunks_of_deleted_files(store: VectorStore, embedder: Embedder, workdir: Path) -> None:
    _run(store, embedder, workdir)
    (workdir / "corpus" / "gift-cards.txt").unlink()

    kept = _run(store, embedder, workdir)
    pruned = _run(store, embedder, workdir, prune=True)

    assert "corpus/gift-cards.txt" not in _by_source(kept)
    assert kept.removed == 0
    assert [(f.source, f.removed, f.pruned) for f in pruned.files if f.pruned] == [("corpus/gift-cards.txt", 1, True)]
    assert "corpus/gift-cards.txt" not in store.source_index("docs")
    assert store.count("docs") == CORPUS_CHUNKS - 1


def test_labelled_examples_are_embedded_by_their_input(store: VectorStore, embedder: Embedder) -> None:
    examples = DATA / "examples" / "support-examples.jsonl"

    report = ingest(store, embedder, "support-examples", [examples], progress=False, base_dir=DATA)

    assert (report.added, report.files[0].source) == (6, "examples/support-examples.jsonl")
    hits = store.search("support-examples", embedder.embed(["my package is stuck in transit"])[0], top_k=1)
    assert hits[0].payload == {
        "input": "My parcel has not moved for a week, what now?",
        "output": '{"intent": "tracking", "priority": "high"}',
        "kind": "example",
        "source": "examples/support-examples.jsonl",
        "chunk": 0,
    }
    charged = store.search("support-examples", embedder.embed(["I was charged twice for one order."])[0], top_k=1)
    assert charged[0].score > 0.99
    assert charged[0].payload["lang"] == "en"


def test_progress_bar_and_summary_table_render(store: VectorStore, embedder: Embedder, workdir: Path) -> None:
    output = io.StringIO()
    console = Console(file=output, width=100, force_terminal=False)

    report = ingest(store, embedder, "docs", [workdir / "corpus"], base_dir=workdir, console=console)
    console.print(report_table(report))

    text = output.getvalue()
    assert "corpus/returns.md" in text
    assert "total" in text
    assert str(CORPUS_CHUNKS) in text


def test_a_malformed_jsonl_line_is_an_error_naming_file_and_line(
    store: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "broken"\n')

    with pytest.raises(IngestError, match=r"^bad\.jsonl:2: not valid JSON"):
        ingest(store, embedder, "docs", [bad], progress=False, base_dir=tmp_path)
    assert not store.collection_exists("docs")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"title": "no text"}', 'needs "text", or "input" and "output"'),
        ('{"text": "x", "source": "spoofed"}', "source are set by ingest"),
        ('{"input": "", "output": "y"}', "input must be non-empty text"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_jsonl_records_are_checked(
    store: VectorStore, embedder: Embedder, tmp_path: Path, line: str, message: str
) -> None:
    (tmp_path / "records.jsonl").write_text(line + "\n")

    with pytest.raises(IngestError, match=message):
        ingest(store, embedder, "docs", [tmp_path / "records.jsonl"], progress=False, base_dir=tmp_path)


def test_missing_and_unsupported_paths_are_errors(store: VectorStore, embedder: Embedder, tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")

    with pytest.raises(IngestError, match="no such file or directory"):
        ingest(store, embedder, "docs", [tmp_path / "absent.md"], progress=False)
    with pytest.raises(IngestError, match=r"cannot ingest \.png files"):
        ingest(store, embedder, "docs", [tmp_path / "photo.png"], progress=False)


def test_folders_skip_hidden_and_unsupported_files(store: VectorStore, embedder: Embedder, tmp_path: Path) -> None:
    (tmp_path / "docs" / ".git").mkdir(parents=True)
    (tmp_path / "docs" / ".git" / "notes.md").write_text("# Hidden\n\nnot ingested")
    (tmp_path / "docs" / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "docs" / "a.md").write_text("# A\n\nVisible text.")

    report = ingest(store, embedder, "docs", [tmp_path / "docs"], progress=False, base_dir=tmp_path)

    assert [file.source for file in report.files] == ["docs/a.md"]
