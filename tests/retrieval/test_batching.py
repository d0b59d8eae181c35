"""Queries of concurrent requests share one model call; repeated queries skip the model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.retrieval.embedding import Embedder, EmbeddingError

QUESTIONS = [f"How long does delivery take to city number {n}?" for n in range(16)]


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    embedder = Embedder(cache_dir=tmp_path_factory.mktemp("models"))
    embedder.load()
    return embedder


async def test_concurrent_queries_are_embedded_together_and_match_alone(embedder: Embedder) -> None:
    before = embedder.batches

    together = await asyncio.gather(*(embedder.aembed_query(q) for q in QUESTIONS))

    assert embedder.batches - before < len(QUESTIONS) / 2, "queued queries share model calls"
    alone = embedder.embed(QUESTIONS)
    for got, want in zip(together, alone, strict=True):
        assert got == pytest.approx(want, abs=1e-4)


async def test_a_repeated_query_is_answered_from_the_cache(embedder: Embedder) -> None:
    first = await embedder.aembed_query("Can I return a rug after thirty days?")
    calls = embedder.batches

    again = await embedder.aembed_query("Can I return a rug after thirty days?")

    assert again == first and embedder.batches == calls


async def test_a_hung_up_query_does_not_break_the_batch(embedder: Embedder) -> None:
    doomed = asyncio.ensure_future(embedder.aembed_query("a question whose client left"))
    kept = asyncio.ensure_future(embedder.aembed_query("a question still wanted"))
    doomed.cancel()

    vector = await asyncio.wait_for(kept, timeout=60)

    assert len(vector) == embedder.dimension
    with pytest.raises(asyncio.CancelledError):
        await doomed


async def test_a_model_failure_reaches_every_waiting_query(tmp_path: Path) -> None:
    broken = Embedder(model_dir=tmp_path / "no-such-model")

    results = await asyncio.gather(broken.aembed_query("one"), broken.aembed_query("two"), return_exceptions=True)

    assert all(isinstance(result, EmbeddingError) for result in results), results
