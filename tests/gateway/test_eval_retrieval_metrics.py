"""Recall@k and MRR over distinct sources, from the context header the retrieval layer sets."""

from __future__ import annotations

import pytest

from gateway.eval.retrieval import Retrieved, parse_context_header, retrieval_metrics


def test_the_header_is_parsed_with_sources_decoded() -> None:
    header = "a1;source=docs/returns.md;heading=Returns%20%E2%80%BA%20Exceptions,b2,c3;source=faq.jsonl"

    assert parse_context_header(header) == [
        Retrieved("a1", "docs/returns.md"),
        Retrieved("b2", ""),
        Retrieved("c3", "faq.jsonl"),
    ]
    assert parse_context_header(None) == parse_context_header("") == []


def test_ranks_count_distinct_sources_and_names_match_files_or_ids() -> None:
    passages = [Retrieved("1", "docs/a.md"), Retrieved("2", "docs/a.md"), Retrieved("3", "docs/b.md")]

    metrics = retrieval_metrics(
        [
            (passages, ["b.md"]),  # rank 2 (two chunks of a.md are one rank)
            (passages, ["docs/a.md", "c.md"]),  # rank 1, half recalled
            (passages, ["3"]),  # a chunk id: rank 2
            (passages, []),  # not counted
        ]
    )

    assert metrics == {"recall_at_k": pytest.approx(2.5 / 3), "mrr": pytest.approx((0.5 + 1 + 0.5) / 3), "k": 2, "n": 3}


def test_no_expected_sources_means_no_retrieval_figures() -> None:
    assert retrieval_metrics([([Retrieved("1", "a.md")], [])]) is None
