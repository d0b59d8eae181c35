"""``prefit ingest``: documents and labelled examples in, chunk vectors in a Qdrant collection out.

Retrieval can only quote what was ingested, and ingesting must be cheap to repeat (a docs folder is
re-ingested on every change). So:

- Markdown, text and HTML are cut into chunks that never cross a heading and prefer paragraph,
  then sentence, boundaries, with a size cap and a little overlap; JSONL holds records with
  ``text`` and metadata, or labelled ``{"input", "output"}`` examples for dynamic few-shot (the
  input is embedded, ``kind: example``).
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
from gateway.retrieval.embedding import Embedder
from gateway.retrieval.vectors import Point, VectorStore

__all__ = ["FORMATS", "FileReport", "IngestError", "IngestReport", "ingest", "report_table"]

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


@dataclass(frozen=True, slots=True)
class IngestReport:
    collection: str
    files: tuple[FileReport, ...]

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
    embedder: Embedder,
    collection: str,
    paths: Sequence[str | Path],
    *,
    prune: bool = False,
    progress: bool = True,
    chunking: Chunking | None = None,
    base_dir: str | Path | None = None,
    console: Console | None = None,
) -> IngestReport:
    """Bring ``collection`` in line with the files under ``paths`` (files or folders, walked).

    ``source`` payloads are paths relative to ``base_dir`` (default: the working directory).
    Raises ``IngestError`` before writing anything when a path or a JSONL line is unusable;
    ``EmbeddingError`` and ``VectorStoreError`` pass through.
    """
    chunking = chunking or Chunking()
    files = [(source, _read(path, source, chunking)) for source, path in _collect(paths, Path(base_dir or "."))]
    exists = store.collection_exists(collection)
    existing = store.source_index(collection) if exists else {}
    plans = [(source, items, existing.get(source, set())) for source, items in files]
    new_items = [[item for item in items if item.id not in old] for _, items, old in plans]
    if not exists or any(new_items):
        store.ensure_collection(collection, embedder.dimension)
    reports: list[FileReport] = []
    with _progress_bar(progress, console) as bar:
        task = bar.add_task("embedding", total=sum(map(len, new_items)))
        for (source, items, old), fresh in zip(plans, new_items, strict=True):
            bar.update(task, description=source)
            for start in range(0, len(fresh), _EMBED_BATCH):
                batch = fresh[start : start + _EMBED_BATCH]
                vectors = embedder.embed([item.text for item in batch])
                store.upsert(collection, [Point(i.id, v, i.payload) for i, v in zip(batch, vectors, strict=True)])
                bar.advance(task, len(batch))
            stale = old - {item.id for item in items}
            store.delete(collection, stale)
            reports.append(FileReport(source, len(items), len(fresh), len(items) - len(fresh), len(stale)))
    if prune:
        reports.extend(_prune(store, collection, existing, {source for source, _ in files}))
    return IngestReport(collection, tuple(reports))


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


def _read(path: Path, source: str, chunking: Chunking) -> list[_Item]:
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise IngestError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    kind = FORMATS[path.suffix.lower()]
    if kind == "jsonl":
        return _jsonl_items(text, source, chunking)
    if kind == "html":
        text = html_to_markdown(text)
    chunks = chunk_markdown(text, chunking, headings=kind != "text")
    return [_passage(source, index, chunk, {}) for index, chunk in enumerate(chunks)]


def _passage(source: str, index: int, chunk: Chunk, metadata: dict[str, Any]) -> _Item:
    payload = {**metadata, "kind": "passage", "text": chunk.text, "heading": chunk.heading}
    payload |= {"source": source, "chunk": index}
    embedded = "\n".join((" > ".join(chunk.path), chunk.text)) if chunk.path else chunk.text
    return _Item(_point_id(payload), embedded, payload)


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
