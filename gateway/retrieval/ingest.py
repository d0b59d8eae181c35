"""``prefit ingest``: documents and labelled examples in, chunk vectors in a Qdrant collection out.

Retrieval can only quote what was ingested, and ingesting must be cheap to repeat (a docs folder is
re-ingested on every change). So:

- Markdown, text and HTML are cut into chunks that never cross a heading and prefer paragraph,
  then sentence, boundaries, with a size cap and a little overlap; JSONL holds records with
  ``text`` and metadata, or labelled ``{"input", "output"}`` examples for dynamic few-shot (the
  input is embedded, ``kind: example``).
- Each chunk's stored (and so injected) text starts with its heading path (``Returns \u203a Exceptions``
  in the stored text), so a passage keeps the context its section gave it.
- A new collection is hybrid: each point has a dense vector and a sparse BM25 vector (see
  ``gateway.retrieval.sparse``). A collection made before hybrid search stays dense-only; the
  report says so, and ``recreate`` rebuilds it.
- A file that cannot be read is named in the report and skipped; the rest is ingested.
- A point's id is a UUID derived from its whole payload (source, chunk index, heading, text,
  metadata), so a second run over unchanged files embeds and writes nothing, a changed file
  gets its new chunks and loses the stale ones, and ``prune`` drops files no longer given.

The CLI prints the returned ``IngestReport`` with ``report_table``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gateway.retrieval.chunking import Chunk, Chunking, chunk_markdown, html_to_markdown
from gateway.retrieval.embedding import SentenceEmbedder
from gateway.retrieval.sparse import SparseEncoder
from gateway.retrieval.vectors import Point, VectorStore, mismatch

__all__ = [
    "FORMATS",
    "HEADING_SEPARATOR",
    "FileReport",
    "IngestError",
    "IngestReport",
    "ingest",
    "report_table",
    "upgrade_hint",
]

#: Joins a chunk's heading path, outermost first (U+203A): "Returns \u203a Exceptions".
HEADING_SEPARATOR = " \u203a "

FORMATS = {  # file suffix -> how it is read
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".html": "html",
    ".htm": "html",
    ".jsonl": "jsonl",
}
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "prefit:ingest")
_RESERVED = frozenset({"source", "chunk", "kind"})
_EMBED_BATCH = 64  # texts per embed/upsert round (the embedder batches by 32 inside)


class IngestError(ValueError):
    """A path that cannot be ingested: missing, of an unknown kind, or a malformed JSONL line."""


@dataclass(frozen=True, slots=True)
class FileReport:
    """What one ingest did to one source: chunks it has now, and points added, kept and removed."""

    source: str
    chunks: int
    added: int
    unchanged: int
    removed: int
    pruned: bool = False
    error: str | None = None  # why the file was skipped (it could not be read)


@dataclass(frozen=True, slots=True)
class IngestReport:
    collection: str
    files: tuple[FileReport, ...]
    hybrid: bool = True  # False: an older dense-only collection (searches stay dense)

    @property
    def skipped(self) -> tuple[FileReport, ...]:
        return tuple(file for file in self.files if file.error is not None)

    @property
    def added(self) -> int:
        return sum(file.added for file in self.files)

    @property
    def unchanged(self) -> int:
        return sum(file.unchanged for file in self.files)

    @property
    def removed(self) -> int:
        return sum(file.removed for file in self.files)


@dataclass(frozen=True, slots=True)
class _Item:
    id: str
    text: str  # what is embedded
    payload: dict[str, Any] = field(default_factory=dict)


def ingest(
    store: VectorStore,
    embedder: SentenceEmbedder,
    collection: str,
    paths: Sequence[str | Path],
    *,
    prune: bool = False,
    recreate: bool = False,
    progress: bool = True,
    chunking: Chunking | None = None,
    base_dir: str | Path | None = None,
    console: Console | None = None,
    sparse: SparseEncoder | None = None,
) -> IngestReport:
    """Bring ``collection`` in line with the files under ``paths`` (files or folders, walked).

    ``source`` payloads are paths relative to ``base_dir`` (default: the working directory).
    ``recreate`` drops the collection first (to upgrade a dense-only one to hybrid, say).
    Raises ``IngestError`` before writing anything when a path or a JSONL line is unusable or
    nothing readable holds any text; ``EmbeddingError`` and ``VectorStoreError`` pass through.
    """
    chunking = chunking or Chunking()
    read = [(source, _read(path, source, chunking)) for source, path in _collect(paths, Path(base_dir or "."))]
    files = [(source, items) for source, items in read if not isinstance(items, str)]
    skipped = [FileReport(source, 0, 0, 0, 0, error=items) for source, items in read if isinstance(items, str)]
    if not prune and not any(items for _, items in files):
        raise IngestError(_nothing_found(paths, skipped))
    if recreate:
        store.delete_collection(collection)
    exists = store.collection_exists(collection)
    recorded = store.embedder_of(collection) if exists else None
    if recorded is not None and recorded != embedder.identity:
        raise IngestError(mismatch(collection, recorded, embedder.identity))
    existing = store.source_index(collection) if exists else {}
    plans = [(source, items, existing.get(source, set())) for source, items in files]
    new_items = [[item for item in items if item.id not in old] for _, items, old in plans]
    if not exists or any(new_items):
        store.ensure_collection(collection, embedder.dimension, embedder=embedder.identity)
    hybrid = store.is_hybrid(collection)
    encoder = (sparse or SparseEncoder()) if hybrid else None
    reports: list[FileReport] = list(skipped)
    with _progress_bar(progress, console) as bar:
        task = bar.add_task("embedding", total=sum(map(len, new_items)))
        for (source, items, old), fresh in zip(plans, new_items, strict=True):
            bar.update(task, description=source)
            for start in range(0, len(fresh), _EMBED_BATCH):
                batch = fresh[start : start + _EMBED_BATCH]
                store.upsert(collection, _points(batch, embedder, encoder))
                bar.advance(task, len(batch))
            stale = old - {item.id for item in items}
            store.delete(collection, stale)
            reports.append(FileReport(source, len(items), len(fresh), len(items) - len(fresh), len(stale)))
    if prune:
        reports.extend(_prune(store, collection, existing, {source for source, _ in files}))
    return IngestReport(collection, tuple(reports), hybrid)


def _points(batch: list[_Item], embedder: SentenceEmbedder, encoder: SparseEncoder | None) -> list[Point]:
    texts = [item.text for item in batch]
    vectors = embedder.embed(texts)
    sparse = encoder.documents(texts) if encoder is not None else [None] * len(batch)
    return [Point(i.id, v, i.payload, s) for i, v, s in zip(batch, vectors, sparse, strict=True)]


def _nothing_found(paths: Sequence[str | Path], skipped: list[FileReport]) -> str:
    given = ", ".join(str(path) for path in paths)
    unreadable = "".join(f"; {file.source}: {file.error}" for file in skipped)
    return f"{given}: no text to ingest (formats: {_kinds()}){unreadable}"


def upgrade_hint(collection: str) -> str:
    """What to run to turn a dense-only collection into a hybrid one."""
    return (
        f"collection {collection!r} was made before hybrid search and holds dense vectors only, so its "
        f"searches stay dense; to add BM25 vectors, rebuild it: prefit ingest {collection} PATHS --recreate"
    )


def _prune(store: VectorStore, collection: str, existing: dict[str, set[str]], keep: set[str]) -> list[FileReport]:
    gone = sorted(source for source in existing if source not in keep)
    for source in gone:
        store.delete(collection, existing[source])
    return [FileReport(source, 0, 0, 0, len(existing[source]), pruned=True) for source in gone]


def _progress_bar(enabled: bool, console: Console | None) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=console, disable=not enabled, transient=False)


def report_table(report: IngestReport) -> Table:
    """The ingest summary as a rich table: one row per source, then the totals."""
    table = Table(title=f"ingest into {report.collection}", show_footer=True)
    table.add_column("source", footer="total")
    table.add_column("chunks", justify="right", footer=str(sum(file.chunks for file in report.files)))
    table.add_column("added", justify="right", footer=str(report.added))
    table.add_column("unchanged", justify="right", footer=str(report.unchanged))
    table.add_column("removed", justify="right", footer=str(report.removed))
    for file in report.files:
        source = f"{file.source} [dim](pruned)[/dim]" if file.pruned else file.source
        if file.error is not None:
            source = f"{file.source} [red](skipped: {file.error})[/red]"
        table.add_row(source, str(file.chunks), str(file.added), str(file.unchanged), str(file.removed))
    return table


def _collect(paths: Sequence[str | Path], base_dir: Path) -> list[tuple[str, Path]]:
    """``(source, path)`` for every ingestible file, folders walked in name order, hidden ones skipped."""
    found: dict[str, Path] = {}
    for given in paths:
        path = Path(given)
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
            for file in candidates:
                if not any(part.startswith(".") for part in file.relative_to(path).parts):
                    found.setdefault(_source(file, base_dir), file)
        elif path.is_file():
            if path.suffix.lower() not in FORMATS:
                raise IngestError(f"{given}: cannot ingest {path.suffix or 'extensionless'} files; use {_kinds()}")
            found.setdefault(_source(path, base_dir), path)
        else:
            raise IngestError(f"{given}: no such file or directory")
    return list(found.items())


def _kinds() -> str:
    return ", ".join(sorted(FORMATS))


def _source(path: Path, base_dir: Path) -> str:
    absolute, base = Path(os.path.abspath(path)), Path(os.path.abspath(base_dir))
    return (absolute.relative_to(base) if absolute.is_relative_to(base) else absolute).as_posix()


def _read(path: Path, source: str, chunking: Chunking) -> list[_Item] | str:
    """The file's items, or why it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    kind = FORMATS[path.suffix.lower()]
    if kind == "jsonl":
        return _jsonl_items(text, source, chunking)
    if kind == "html":
        text = html_to_markdown(text)
    chunks = chunk_markdown(text, chunking, headings=kind != "text")
    return [_passage(source, index, chunk, {}) for index, chunk in enumerate(chunks)]


def _passage(source: str, index: int, chunk: Chunk, metadata: dict[str, Any]) -> _Item:
    heading = HEADING_SEPARATOR.join(chunk.path)
    text = f"{heading}\n{chunk.text}" if heading else chunk.text
    payload = {**metadata, "kind": "passage", "text": text, "heading": heading}
    payload |= {"source": source, "chunk": index}
    return _Item(_point_id(payload), text, payload)


def _point_id(payload: dict[str, Any]) -> str:
    return str(uuid.uuid5(_NAMESPACE, json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)))


def _jsonl_items(text: str, source: str, chunking: Chunking) -> list[_Item]:
    items: list[_Item] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = _record(line, f"{source}:{number}")
        if "input" in record and "output" in record:
            if not isinstance(record["input"], str) or not record["input"].strip():
                raise IngestError(f"{source}:{number}: an example's input must be non-empty text")
            payload = {**record, "kind": "example", "source": source, "chunk": len(items)}
            items.append(_Item(_point_id(payload), record["input"], payload))
        elif isinstance(record.get("text"), str):
            metadata = {key: value for key, value in record.items() if key != "text"}
            title = str(record.get("heading") or record.get("title") or "")
            for chunk in chunk_markdown(record["text"], chunking):
                path = (title, *chunk.path) if title else chunk.path
                items.append(_passage(source, len(items), Chunk(path, chunk.text), metadata))
        else:
            raise IngestError(f'{source}:{number}: a record needs "text", or "input" and "output"')
    return items


def _record(line: str, where: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise IngestError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise IngestError(f"{where}: each line must be a JSON object")
    if clash := sorted(_RESERVED & record.keys()):
        raise IngestError(f"{where}: {', '.join(clash)} are set by ingest; rename the field")
    return record
