"""Retrieval measured like a prompt: recall@k and MRR of the passages a variant's policy inserted.

A retrieval change (``mode: dense`` against ``hybrid``, another ``top_k`` or chunk size) is worth
as much as the answers it leads to, but it can also be checked directly: an eval item may name
the sources that answer it (``expected_sources``: file names or chunk ids), and the retrieval
layer says which passages it inserted (``x-prefit-context-ids``, best first). Ranks are counted
over distinct sources, so three chunks of one file are one rank; ``k`` is the most passages any
item got (the policy's ``top_k`` unless the context budget cut it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

__all__ = ["Retrieved", "parse_context_header", "retrieval_metrics"]


@dataclass(frozen=True, slots=True)
class Retrieved:
    """One inserted passage: its chunk id and source (a path, or empty)."""

    id: str
    source: str = ""


def parse_context_header(value: str | None) -> list[Retrieved]:
    """The passages of an ``x-prefit-context-ids`` header (``ID;source=...;heading=...``, comma-separated)."""
    passages: list[Retrieved] = []
    for entry in (value or "").split(","):
        if not entry.strip():
            continue
        chunk_id, *params = entry.strip().split(";")
        fields = dict(param.split("=", 1) for param in params if "=" in param)
        passages.append(Retrieved(chunk_id, unquote(fields.get("source", ""))))
    return passages


def _matches(passage: Retrieved, name: str) -> bool:
    """A name is a chunk id, a source path, or its file name (``returns.md`` matches ``docs/returns.md``)."""
    source = passage.source
    return name in (passage.id, source) or (bool(source) and source.rsplit("/", 1)[-1] == name)


def _distinct(passages: Sequence[Retrieved]) -> list[list[Retrieved]]:
    """Passages grouped by source, in order of first appearance (a passage without one stands alone)."""
    groups: dict[str, list[Retrieved]] = {}
    for passage in passages:
        groups.setdefault(passage.source or f"id:{passage.id}", []).append(passage)
    return list(groups.values())


def _item(passages: Sequence[Retrieved], expected: Sequence[str]) -> tuple[float, float]:
    """(recall, reciprocal rank of the first expected source) for one item."""
    ranks = _distinct(passages)
    found = [next((r for r, group in enumerate(ranks, 1) if any(_matches(p, n) for p in group)), 0) for n in expected]
    hits = [rank for rank in found if rank]
    return len(hits) / len(expected), (1 / min(hits) if hits else 0.0)


def retrieval_metrics(items: Sequence[tuple[Sequence[Retrieved], Sequence[str]]]) -> dict[str, Any] | None:
    """``{recall_at_k, mrr, k, n}`` over the items that name expected sources; None when none does."""
    scored = [(passages, expected) for passages, expected in items if expected]
    if not scored:
        return None
    per_item = [_item(passages, expected) for passages, expected in scored]
    return {
        "recall_at_k": sum(recall for recall, _ in per_item) / len(per_item),
        "mrr": sum(rr for _, rr in per_item) / len(per_item),
        "k": max((len(_distinct(passages)) for passages, _ in scored), default=0),
        "n": len(per_item),
    }
