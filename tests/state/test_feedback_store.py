"""The in-process feedback store stays bounded and forgets expired requests; experiment counts
are kept per policy, metric and arm."""

from __future__ import annotations

import asyncio

from gateway.state.feedback import Answered, ArmCounts, MemoryFeedback


def test_the_oldest_records_go_first_when_the_store_is_full() -> None:
    async def scenario() -> None:
        store = MemoryFeedback(60.0, max_entries=2)
        for n in range(3):
            store.remember(f"r{n}", Answered("support", f"v{n}"))
        assert await store.recall("r0") is None
        assert await store.recall("r2") == Answered("support", "v2")

    asyncio.run(scenario())


def test_expired_records_are_forgotten() -> None:
    async def scenario() -> None:
        store = MemoryFeedback(0.0, max_entries=10)
        store.remember("r1", Answered("support", "a"))
        assert await store.recall("r1") is None

    asyncio.run(scenario())


def test_counts_are_per_policy_metric_and_arm() -> None:
    async def scenario() -> None:
        store = MemoryFeedback(60.0, max_entries=10)
        for success in (True, True, False):
            await store.count("support", "resolved", "a", success)
        await store.count("support", "thumbs_up", "a", True)
        await store.count("other", "resolved", "b", False)
        assert await store.counts("support", "resolved") == {"a": ArmCounts(2, 1)}

    asyncio.run(scenario())
