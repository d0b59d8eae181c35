"""What remembering a request for ``/v1/feedback`` costs the gateway, per request.

Every policy request writes one record (who answered it) to the feedback store. In process that
is a bounded dict insert; on Redis the writes of a 2 ms window go out as one script call from
a background task. This measures the CPU the gateway process spends per record (the
event loop's share, since Redis's own work is in another process), for a burst of ``--batch``
requests per loop turn, on the real Redis at 127.0.0.1:6379 under a throwaway key prefix.

    .venv/bin/python benchmarks/feedback_bench.py [--records 20000] [--batch 32]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from gateway.metrics import Metrics
from gateway.settings import RedisSettings
from gateway.state.feedback import Answered, MemoryFeedback, RedisFeedback
from gateway.state.redis import RedisState


def bench_memory(records: int) -> float:
    store = MemoryFeedback(86_400.0, 200_000)
    answered = Answered("support", "b")
    ids = [uuid.uuid4().hex for _ in range(records)]
    started = time.process_time()
    for request_id in ids:
        store.remember(request_id, answered)
    return (time.process_time() - started) / records


async def bench_redis(records: int, batch: int) -> tuple[float, float]:
    prefix = f"prefit-bench-{uuid.uuid4().hex[:8]}:"
    state = RedisState("redis://127.0.0.1:6379/0", RedisSettings(key_prefix=prefix), Metrics())
    store = RedisFeedback(state, 60.0)
    answered = Answered("support", "b")
    ids = [uuid.uuid4().hex for _ in range(records)]
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, records, batch):
        for request_id in ids[start : start + batch]:
            store.remember(request_id, answered)
        await store.close()  # wait for this batch; the records of one window form one batch
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    found = await store.recall(ids[-1])
    assert found == answered, found
    await state.client.delete(*[f"{prefix}req:{i}" for i in ids])
    await state.close()
    return cpu / records, wall / records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    memory = bench_memory(args.records)
    cpu, wall = asyncio.run(bench_redis(args.records, args.batch))
    print(f"memory: {memory * 1e6:.2f} us CPU per request record")
    print(f"redis (batch {args.batch}): {cpu * 1e6:.1f} us gateway CPU, {wall * 1e6:.1f} us wall per record")


if __name__ == "__main__":
    main()
