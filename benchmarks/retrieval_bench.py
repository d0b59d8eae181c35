"""Prefit's retrieval benchmark: what does embed + search add to a request, at 10,000 chunks?

A retrieval request embeds the user's last turn and searches a collection before anything goes
upstream. This script builds an embedded Qdrant collection of ``--chunks`` synthetic chunks, then
runs closed-loop "requests" exactly as the retrieval layer makes them (``Embedder.aembed`` then
``VectorStore.asearch``, both off the event loop) at each concurrency, and reports p50/p99 of the
whole step and of its two halves, with requests per second. Beside the load, a probe measures how
late the event loop wakes from a 1 ms sleep: that lateness is what requests to policies without
retrieval would feel. Target: at most 5 ms added p50 at concurrency 1.

    .venv/bin/python benchmarks/retrieval_bench.py [--chunks 10000] [--requests 300] [--concurrency 1,16]
        [--top-k 4] [--path DIR] [--embed-chunks] [--embed-threads 1] [--mode hybrid|dense] [--unbatched]
        [--json out.json]

Queries go through ``Embedder.aembed_query`` (batched across concurrent requests, recent ones
cached) as the retrieval layer sends them; ``--unbatched`` embeds each alone (the old path).
``--mode hybrid`` (the default) also sends the BM25 query vector; chunks always get both.

Stored vectors are random unit vectors unless ``--embed-chunks`` (exact search costs the same
either way; embedding 10,000 chunks takes minutes). ``--path`` keeps the collection for the next
run; embedded Qdrant writes each point with its own commit, so building it on disk takes a while.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from gateway.retrieval.embedding import Embedder
from gateway.retrieval.sparse import SparseEncoder
from gateway.retrieval.vectors import Point, VectorStore

COLLECTION = "bench-chunks"
TOPICS = [
    "returns",
    "shipping",
    "warranty",
    "payments",
    "accounts",
    "gift cards",
    "loyalty",
    "pickup",
    "care",
    "customs",
]
SUBJECTS = ["sofa", "lamp", "rug", "table", "bed frame", "towel", "candle", "mirror", "shelf", "blanket", "chair"]
FACTS = [
    "can be returned within {n} days of delivery",
    "ships in {n} business days to Belgium and the Netherlands",
    "carries a {n}-year warranty against manufacturing defects",
    "is charged when the order leaves warehouse {n}",
    "earns {n} loyalty points per euro spent",
    "is held for {n} days at the click-and-collect desk",
]
QUESTIONS = [
    "How long do I have to return a {s}?",
    "When will my {s} be delivered?",
    "Is my {s} still under warranty?",
    "When is my card charged for the {s}?",
    "How many points do I get for buying a {s}?",
    "How long will the store keep my {s} for pickup?",
]


@dataclass(frozen=True)
class Row:
    label: str
    concurrency: int
    requests: int
    per_second: float
    total_p50_ms: float
    total_p99_ms: float
    embed_p50_ms: float
    embed_p99_ms: float
    search_p50_ms: float
    search_p99_ms: float
    loop_lag_p50_ms: float
    loop_lag_p99_ms: float


def chunk_texts(count: int) -> Iterator[str]:
    rng = random.Random(1)
    for n in range(count):
        topic, subject, fact = rng.choice(TOPICS), rng.choice(SUBJECTS), rng.choice(FACTS)
        yield f"{topic.title()} policy, section {n}: the {subject} {fact.format(n=rng.randint(2, 90))}."


def chunk_batches(chunks: int, embedder: Embedder, embed_chunks: bool) -> Iterator[list[Point]]:
    """The collection's points, 512 at a time, the same on every run (seeded)."""
    rng = np.random.default_rng(1)
    encoder = SparseEncoder()
    texts = list(chunk_texts(chunks))
    for start in range(0, chunks, 512):
        batch = texts[start : start + 512]
        if embed_chunks:
            vectors = embedder.embed(batch)
        else:
            raw = rng.normal(size=(len(batch), embedder.dimension))
            vectors = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).tolist()
        sparse = encoder.documents(batch)
        yield [
            Point(str(uuid.UUID(int=n + 1)), vector, {"text": text, "source": f"docs/{n % 250}.md", "chunk": n}, bm25)
            for n, (text, vector, bm25) in enumerate(zip(batch, vectors, sparse, strict=True), start)
        ]


def build(stores: list[VectorStore], embedder: Embedder, args: argparse.Namespace, console: Console) -> float:
    """Fill each store's collection unless it already holds ``--chunks`` points; returns the seconds taken."""
    todo = [s for s in stores if not (s.collection_exists(COLLECTION) and s.count(COLLECTION) == args.chunks)]
    if not todo:
        return 0.0
    started = time.perf_counter()
    with console.status(f"building {args.chunks:,} chunks") as status:
        for store in todo:
            store.ensure_collection(COLLECTION, embedder.dimension)
        for batch in chunk_batches(args.chunks, embedder, args.embed_chunks):
            for store in todo:
                store.upsert(COLLECTION, batch)
            status.update(f"building {args.chunks:,} chunks: {batch[-1].payload['chunk'] + 1:,} written")
    return time.perf_counter() - started


def questions() -> Iterator[str]:
    rng = random.Random(2)
    while True:
        yield rng.choice(QUESTIONS).format(s=rng.choice(SUBJECTS)) + f" (order {rng.randint(1000, 9999)})"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] * 1000


async def loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    """How late ``sleep(1 ms)`` wakes while the load runs: the stall any other request would feel."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - started - 0.001)


async def run_level(
    label: str, concurrency: int, requests: int, step: Callable[[str], Awaitable[tuple[float, float]]]
) -> Row:
    source = questions()
    totals: list[float] = []
    embeds: list[float] = []
    searches: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            embed_s, search_s = await step(next(source))
            totals.append(time.perf_counter() - started)
            embeds.append(embed_s)
            searches.append(search_s)

    stop, lags = asyncio.Event(), list[float]()
    probe = asyncio.create_task(loop_lag(stop, lags))
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    stop.set()
    await probe
    return Row(
        label,
        concurrency,
        len(totals),
        len(totals) / elapsed,
        percentile(totals, 0.5),
        percentile(totals, 0.99),
        percentile(embeds, 0.5),
        percentile(embeds, 0.99),
        percentile(searches, 0.5),
        percentile(searches, 0.99),
        percentile(lags, 0.5),
        percentile(lags, 0.99),
    )


def retrieval_step(
    embedder: Embedder, store: VectorStore, args: argparse.Namespace
) -> Callable[[str], Awaitable[tuple[float, float]]]:
    encoder = SparseEncoder()

    async def step(question: str) -> tuple[float, float]:
        started = time.perf_counter()
        if args.unbatched:
            vector = (await embedder.aembed([question]))[0]
        else:
            vector = await embedder.aembed_query(question)
        embedded = time.perf_counter()
        sparse = encoder.query(question) if args.mode == "hybrid" else None
        await store.asearch(COLLECTION, vector, top_k=args.top_k, min_score=0.2, sparse=sparse)
        return embedded - started, time.perf_counter() - embedded

    return step


async def measure(
    args: argparse.Namespace, embedder: Embedder, store: VectorStore, exact: VectorStore | None
) -> list[Row]:
    step = retrieval_step(embedder, store, args)
    await run_level("warm-up", 4, 40, step)
    rows: list[Row] = []
    idle_stop, idle_lags = asyncio.Event(), list[float]()
    probe = asyncio.create_task(loop_lag(idle_stop, idle_lags))
    await asyncio.sleep(1.0)
    idle_stop.set()
    await probe
    rows.append(
        Row("idle loop (no load)", 0, 0, 0, 0, 0, 0, 0, 0, 0, percentile(idle_lags, 0.5), percentile(idle_lags, 0.99))
    )
    for concurrency in args.concurrency:
        rows.append(await run_level("embed + search", concurrency, args.requests * max(1, concurrency // 4), step))
    if exact is not None:
        rows.append(
            await run_level(
                "embed + qdrant local search",
                1,
                max(20, args.requests // 5),
                retrieval_step(embedder, exact, args),
            )
        )
    return rows


def table(rows: list[Row], info: dict[str, Any]) -> Table:
    where = f"{info['nproc']} CPUs, load average {info['load']}"
    out = Table(title=f"retrieval step at {info['chunks']:,} chunks, top_k {info['top_k']} ({where})")
    for name in (
        "step",
        "conc.",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "embed p50/p99",
        "search p50/p99",
        "loop lag p50/p99",
    ):
        out.add_column(name, justify="left" if name == "step" else "right")
    for row in rows:
        busy = row.requests > 0
        out.add_row(
            row.label,
            str(row.concurrency or "-"),
            str(row.requests or "-"),
            f"{row.per_second:.0f}" if busy else "-",
            f"{row.total_p50_ms:.2f}" if busy else "-",
            f"{row.total_p99_ms:.2f}" if busy else "-",
            f"{row.embed_p50_ms:.2f} / {row.embed_p99_ms:.2f}" if busy else "-",
            f"{row.search_p50_ms:.2f} / {row.search_p99_ms:.2f}" if busy else "-",
            f"{row.loop_lag_p50_ms:.2f} / {row.loop_lag_p99_ms:.2f}",
        )
    return out


def machine(args: argparse.Namespace, build_s: float) -> dict[str, Any]:
    return {
        "chunks": args.chunks,
        "top_k": args.top_k,
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "build_s": round(build_s, 1),
        "embed_threads": args.embed_threads,
        "onnx_threads": args.onnx_threads,
        "stored_vectors": "embedded text" if args.embed_chunks else "random",
    }


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300, help="requests per level (x concurrency/4 above 4)")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--path", type=Path, help="keep the embedded collection here (default: a temporary folder)")
    parser.add_argument("--embed-chunks", action="store_true", help="embed the chunk texts instead of random vectors")
    parser.add_argument("--embed-threads", type=int, default=1, help="the embedder's max_concurrency")
    parser.add_argument("--onnx-threads", type=int, default=1, help="ONNX Runtime threads per call (0: all cores)")
    parser.add_argument("--no-qdrant-compare", action="store_true", help="skip qdrant-client's own local search row")
    parser.add_argument("--mode", choices=["hybrid", "dense"], default="hybrid", help="retrieval.mode to measure")
    parser.add_argument("--unbatched", action="store_true", help="embed each query alone (no batching, no cache)")
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def main() -> None:
    args = parse()
    console = Console(width=None if os.isatty(1) else 160)
    with contextlib.ExitStack() as stack:
        folder = args.path or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="prefit-retrieval-")))
        embedder = Embedder(
            cache_dir=Path(".prefit/models"), max_concurrency=args.embed_threads, threads=args.onnx_threads or None
        )
        embedder.load()
        store = VectorStore(path=folder / "qdrant")
        stack.callback(store.close)
        # qdrant-client's own local search, for comparison (the same folder cannot be opened twice)
        exact = None if args.no_qdrant_compare else VectorStore(path=":memory:", memory_index=False)
        build_s = build([store] if exact is None else [store, exact], embedder, args, console)
        store.warm(COLLECTION)
        rows = _run(measure(args, embedder, store, exact))
        info = machine(args, build_s)
        console.print(table(rows, info))
        console.print(
            f"build {info['build_s']} s ({info['stored_vectors']} vectors, on disk and in memory for the comparison); "
            f"embed calls at once {args.embed_threads}, ONNX threads per call {args.onnx_threads or 'all'}; "
            f"python {info['python']}"
        )
        if args.json:
            args.json.write_text(json.dumps({"machine": info, "rows": [asdict(row) for row in rows]}, indent=2))


def _run(main: Coroutine[Any, Any, list[Row]]) -> list[Row]:
    """On uvloop when installed, as ``prefit serve`` runs."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


if __name__ == "__main__":
    main()
