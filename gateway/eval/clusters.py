"""Failing items grouped by what they ask: the bundled embedding model, cosine similarity, greedily.

"Twelve wrong" becomes "eight of them are refund questions": each failing item's input is embedded
(in a worker thread, off the event loop) and joins the most similar existing group when its cosine
similarity to the group's centroid reaches ``threshold``, else starts a group. Groups come biggest
first; each names the member nearest its centroid as the example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.eval.runner import ItemResult
from gateway.retrieval.embedding import Embedder

__all__ = ["DEFAULT_THRESHOLD", "cluster_failures", "group"]

DEFAULT_THRESHOLD = 0.6


@dataclass(slots=True)
class _Group:
    members: list[int]
    total: np.ndarray

    def centroid(self) -> np.ndarray:
        norm = float(np.linalg.norm(self.total))
        return self.total / norm if norm else self.total


def group(vectors: list[list[float]], threshold: float = DEFAULT_THRESHOLD) -> list[tuple[list[int], int]]:
    """(member indexes, example index) per group of unit vectors, biggest group first."""
    groups: list[_Group] = []
    for index, raw in enumerate(vectors):
        vector = np.asarray(raw, dtype=np.float64)
        similarities = [float(vector @ g.centroid()) for g in groups]
        best = int(np.argmax(similarities)) if similarities else -1
        if best >= 0 and similarities[best] >= threshold:
            groups[best].members.append(index)
            groups[best].total = groups[best].total + vector
        else:
            groups.append(_Group([index], vector.copy()))
    out = []
    for g in groups:
        centre = g.centroid()
        example = max(g.members, key=lambda i: float(np.asarray(vectors[i]) @ centre))
        out.append((g.members, example))
    out.sort(key=lambda pair: (-len(pair[0]), pair[0][0]))
    return out


async def cluster_failures(
    failing: list[ItemResult], embedder: Embedder, threshold: float = DEFAULT_THRESHOLD
) -> list[dict[str, Any]]:
    """``[{size, items: [ids], example: {id, input, expected, output}}]`` for the failing items."""
    if not failing:
        return []
    vectors = await embedder.aembed([r.item.text() for r in failing])
    out = []
    for members, example in group(vectors, threshold):
        sample = failing[example]
        out.append(
            {
                "size": len(members),
                "items": [failing[i].item.id for i in members],
                "example": {
                    "id": sample.item.id,
                    "input": sample.item.input,
                    "expected": sample.item.expected,
                    "output": sample.output if sample.error is None else sample.error,
                },
            }
        )
    return out
