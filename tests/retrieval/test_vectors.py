"""The vector store over embedded Qdrant in a temporary folder: collections, points, search, locking."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import numpy as np
import pytest

from gateway.retrieval.resources import ResourceHub
from gateway.retrieval.vectors import (
    MEMORY,
    Hit,
    Point,
    VectorStore,
    VectorStoreError,
    VectorStoreLocked,
    VectorStoreUnreachable,
)
from gateway.settings import Settings
from middleware.base import ResourceError
from tests.conftest import free_port

A, B, C, D = (str(uuid.uuid5(uuid.NAMESPACE_URL, name)) for name in "abcd")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VectorStore]:
    store = VectorStore(path=tmp_path / "qdrant")
    store.ensure_collection("docs", 3)
    store.upsert(
        "docs",
        [
            Point(A, [1.0, 0.0, 0.0], {"source": "returns.md", "text": "thirty days", "tenant": "acme"}),
            Point(B, [0.8, 0.6, 0.0], {"source": "returns.md", "text": "refund timing", "tenant": "globex"}),
            (C, [0.0, 1.0, 0.0], {"source": "shipping.md", "text": "two days", "tenant": "acme"}),
            Point(D, [0.0, 0.0, 1.0], {"source": "warranty.md", "text": "five years", "tenant": "acme"}),
        ],
    )
    yield store
    store.close()


def test_search_returns_the_nearest_points_best_first_with_payloads(store: VectorStore) -> None:
    hits = store.search("docs", [1.0, 0.1, 0.0], top_k=2)

    assert [hit.id for hit in hits] == [A, B]
    assert hits[0].score > hits[1].score
    assert hits[0].payload == {"source": "returns.md", "text": "thirty days", "tenant": "acme"}


def test_min_score_drops_weak_hits(store: VectorStore) -> None:
    hits = store.search("docs", [1.0, 0.0, 0.0], top_k=4, min_score=0.5)

    assert [hit.id for hit in hits] == [A, B]
    assert all(hit.score >= 0.5 for hit in hits)


def test_filter_keeps_only_matching_payloads(store: VectorStore) -> None:
    hits = store.search("docs", [1.0, 0.0, 0.0], top_k=4, filter={"tenant": "acme", "source": "returns.md"})

    assert [hit.id for hit in hits] == [A]


async def test_asearch_matches_search_and_runs_concurrently(store: VectorStore) -> None:
    expected = store.search("docs", [0.0, 1.0, 0.1], top_k=3)
    results: list[list[Hit]] = []

    async def one() -> None:
        results.append(await store.asearch("docs", [0.0, 1.0, 0.1], top_k=3))

    async with anyio.create_task_group() as group:
        for _ in range(16):
            group.start_soon(one)

    assert results == [expected] * 16
    assert await store.acollection_exists("docs")
    assert not await store.acollection_exists("nope")


def test_ids_by_source_and_source_index(store: VectorStore) -> None:
    assert store.ids_by_source("docs", "returns.md") == {A, B}
    assert store.ids_by_source("docs", "missing.md") == set()
    assert store.source_index("docs") == {"returns.md": {A, B}, "shipping.md": {C}, "warranty.md": {D}}


def test_upsert_replaces_and_delete_removes(store: VectorStore) -> None:
    store.upsert("docs", [Point(A, [0.0, 0.0, 1.0], {"source": "returns.md", "text": "changed"})])
    store.delete("docs", [B, C])
    store.delete("docs", [])

    assert store.count("docs") == 2
    assert {hit.payload["text"] for hit in store.search("docs", [0.0, 0.0, 1.0], top_k=2)} == {"changed", "five years"}
    assert store.source_index("docs") == {"returns.md": {A}, "warranty.md": {D}}


def test_ensure_collection_is_idempotent_and_checks_the_width(store: VectorStore) -> None:
    store.ensure_collection("docs", 3)

    assert store.collection_exists("docs")
    assert store.count("docs") == 4
    with pytest.raises(VectorStoreError, match=r"width 3\b.*width 384"):
        store.ensure_collection("docs", 384)


def test_scroll_pages_through_large_collections() -> None:
    store = VectorStore(path=MEMORY)  # on disk, embedded Qdrant commits each point: ~10 ms apiece
    store.ensure_collection("many", 2)
    ids = {str(uuid.uuid4()) for _ in range(2500)}
    store.upsert("many", [Point(i, [1.0, float(n)], {"source": f"f{n % 3}"}) for n, i in enumerate(sorted(ids))])

    index = store.source_index("many")

    assert set().union(*index.values()) == ids
    assert sorted(index) == ["f0", "f1", "f2"]
    store.close()


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    first = VectorStore(path=path)
    first.ensure_collection("docs", 2)
    first.upsert("docs", [Point(A, [1.0, 0.0], {"source": "a"})])
    first.close()

    second = VectorStore(path=path)

    assert second.ids_by_source("docs", "a") == {A}
    second.close()


def test_a_second_process_on_the_same_folder_is_told_to_use_a_server(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    holder = textwrap.dedent(
        """
        import sys
        from gateway.retrieval.vectors import VectorStore

        store = VectorStore(path=sys.argv[1])
        print("open", flush=True)
        sys.stdin.read()  # hold the storage until the test closes our stdin
        store.close()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", holder, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "open"

        with pytest.raises(VectorStoreLocked, match=r"qdrant\.url") as caught:
            VectorStore(path=path)
        assert "run Qdrant as a server" in str(caught.value)
    finally:
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.close()
        child.wait(timeout=30)
        child.stdout.close()

    VectorStore(path=path).close()  # released when the other process is done


def test_searches_see_writes_made_after_the_first_search(store: VectorStore) -> None:
    assert [hit.id for hit in store.search("docs", [0.0, 0.0, 1.0], top_k=1)] == [D]
    new = str(uuid.uuid4())

    store.upsert("docs", [Point(new, [0.0, 0.1, 1.0], {"source": "new.md"})])
    assert [hit.id for hit in store.search("docs", [0.0, 0.1, 1.0], top_k=1)] == [new]
    store.delete("docs", [new])
    assert [hit.id for hit in store.search("docs", [0.0, 0.1, 1.0], top_k=1)] == [D]


@pytest.mark.parametrize("memory_index", [True, False])
def test_searching_a_missing_collection_is_a_vector_store_error(memory_index: bool) -> None:
    store = VectorStore(path=MEMORY, memory_index=memory_index)

    with pytest.raises(VectorStoreError, match="'absent'"):
        store.search("absent", [1.0, 0.0], top_k=3)
    store.close()


def test_the_memory_index_ranks_and_filters_like_qdrant() -> None:
    """The numpy copy that serves embedded searches must agree with qdrant-client's own search."""
    rng = np.random.default_rng(7)
    fast, exact = VectorStore(path=MEMORY), VectorStore(path=MEMORY, memory_index=False)
    points = [
        Point(str(uuid.UUID(int=n)), rng.normal(size=16).tolist(), {"tenant": f"t{n % 3}", "tags": [f"g{n % 5}"]})
        for n in range(1, 400)
    ]
    for store in (fast, exact):
        store.ensure_collection("c", 16)
        store.upsert("c", points)

    cases: list[tuple[float | None, dict[str, str] | None]] = [
        (None, None),
        (None, {"tenant": "t1"}),
        (None, {"tags": "g2", "tenant": "t0"}),
        (0.3, None),
        (0.2, {"tenant": "t2"}),
    ]
    for query in rng.normal(size=(20, 16)).tolist():
        for min_score, where in cases:
            got = fast.search("c", query, top_k=5, min_score=min_score, filter=where)
            want = exact.search("c", query, top_k=5, min_score=min_score, filter=where)
            assert [hit.id for hit in got] == [hit.id for hit in want]
            assert [hit.score for hit in got] == pytest.approx([hit.score for hit in want], abs=1e-5)
            assert [hit.payload for hit in got] == [hit.payload for hit in want]
    fast.close()
    exact.close()


def test_a_server_that_does_not_answer_is_unreachable_not_an_unexpected_error() -> None:
    store = VectorStore(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(VectorStoreUnreachable, match="unreachable") as caught:
        store.collection_exists("docs")
    assert not caught.value.timed_out
    with pytest.raises(VectorStoreUnreachable):
        store.search("docs", [1.0, 0.0, 0.0], top_k=1)
    store.close()


def _hub(qdrant: dict[str, str], base_dir: Path) -> ResourceHub:
    hub = ResourceHub()
    settings = {
        "upstreams": {"fake": {"base_url": "http://127.0.0.1:9/v1"}},
        "default_upstream": None,
        "qdrant": qdrant,
    }
    hub.configure(Settings.model_validate(settings), base_dir)
    return hub


async def test_the_resource_hub_says_why_a_search_cannot_run(tmp_path: Path) -> None:
    down = _hub({"url": f"http://127.0.0.1:{free_port()}"}, tmp_path)
    with pytest.raises(ResourceError) as caught:
        await down.search("docs", [1.0, 0.0, 0.0], 1, None, None)
    assert caught.value.reason == "store_unreachable"
    probed = await down.probe("docs")
    assert probed is not None and probed.reason == "store_unreachable"
    down.close()

    empty = _hub({"path": str(tmp_path / "qdrant")}, tmp_path)
    probed = await empty.probe("docs")
    assert probed is not None and probed.reason == "collection_missing"
    with pytest.raises(ResourceError) as caught:
        await empty.search("docs", [1.0, 0.0, 0.0], 1, None, None)
    assert caught.value.reason == "collection_missing"
    empty.close()
