"""The pure parts of ``prefit optimize``: overlap, labels, the split, and which example sets to try.

Kept apart from the running so the choices are deterministic by seed and testable without a model.
Bootstrapped as in DSPy's few-shot search: items the model gets wrong with no examples are the
most informative demonstrations, so each candidate takes them first, spread across the labels.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import orjson

from gateway.eval.runner import EvalItem

__all__ = ["MIN_TRAIN", "candidate_sets", "label_set", "overlapping", "split", "spread", "sweep_ks"]

#: Fewer training items leave no usable pool and dev split.
MIN_TRAIN = 6


def _key(item: EvalItem) -> str:
    if isinstance(item.input, str):
        return " ".join(item.input.split()).casefold()
    return orjson.dumps(item.input, option=orjson.OPT_SORT_KEYS).decode()


def overlapping(train: Sequence[EvalItem], heldout: Sequence[EvalItem]) -> list[str]:
    """Training items that are held-out items too (same id or same input), by id."""
    ids = {item.id for item in heldout}
    inputs = {_key(item) for item in heldout}
    return [item.id for item in train if item.id in ids or _key(item) in inputs]


def label_set(items: Sequence[EvalItem]) -> set[str]:
    return {orjson.dumps(item.expected, option=orjson.OPT_SORT_KEYS).decode().strip('"') for item in items}


def split(train: Sequence[EvalItem], seed: int) -> tuple[list[EvalItem], list[EvalItem]]:
    """(pool of candidate examples, dev split): a seeded shuffle, about 60/40, each side non-empty."""
    shuffled = list(train)
    random.Random(seed).shuffle(shuffled)
    dev_size = max(1, min(len(shuffled) - 1, round(len(shuffled) * 0.4)))
    return shuffled[dev_size:], shuffled[:dev_size]


def sweep_ks(available: int) -> list[int]:
    """0, 2, 4, 8, ... up to what is available (and the full count when it is not a power of two)."""
    ks = [0]
    k = 2
    while k <= available:
        ks.append(k)
        k *= 2
    if available > 1 and ks[-1] != available and available <= 64:
        ks.append(available)
    return ks


def spread(ordered: list[EvalItem], k: int) -> tuple[EvalItem, ...]:
    """The first ``k`` of ``ordered`` taken round-robin across labels, so every label is shown early."""
    by_label: dict[str, list[EvalItem]] = {}
    for item in ordered:
        by_label.setdefault(next(iter(label_set([item]))), []).append(item)
    queues = list(by_label.values())
    chosen: list[EvalItem] = []
    while len(chosen) < k and any(queues):
        for queue in queues:
            if queue and len(chosen) < k:
                chosen.append(queue.pop(0))
    return tuple(chosen)


def candidate_sets(pool: Sequence[EvalItem], wrong: set[str], seed: int, limit: int) -> list[tuple[EvalItem, ...]]:
    """Up to ``limit`` distinct example sets: for each random restart, every k, wrong-first."""
    ks = [k for k in sweep_ks(len(pool)) if k > 0] or [len(pool)]
    seen: set[tuple[str, ...]] = set()
    sets: list[tuple[EvalItem, ...]] = []
    for restart in range(max(limit, 1) * 4):
        rng = random.Random(f"{seed}:{restart}")
        hard = [item for item in pool if item.id in wrong]
        easy = [item for item in pool if item.id not in wrong]
        rng.shuffle(hard)
        rng.shuffle(easy)
        for k in ks:
            chosen = spread(hard + easy, k)
            key = tuple(item.id for item in chosen)
            if key in seen:
                continue
            seen.add(key)
            sets.append(chosen)
            if len(sets) >= limit:
                return sets
    return sets
