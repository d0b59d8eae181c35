"""Shadow variants: a sampled copy of a request answered by a candidate variant in the background.

The copy starts once the client's answer is under way (whole answers: as soon as it is back;
streams: when the last chunk has gone out) as its own task, so it never delays or changes what
the client gets. At most ``feedback.shadow_concurrency`` copies run per replica; one more is
dropped and counted. Both answers are stored as one line, ``{id, input, expected: null, outputs:
{variant: text}}``, in ``feedback.shadow_dir/POLICY.jsonl``, the shape ``prefit diff`` compares.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from gateway.config.load import LoadedPolicy
from gateway.engine.record import Exchange
from gateway.errors import PrefitError
from gateway.metrics import Metrics
from gateway.serving.answer import Answering, answer
from gateway.serving.capture import JsonlWriter, answer_text, dump_line
from gateway.serving.resolve import Route
from gateway.wire import ChatRequest

__all__ = ["ShadowRunner"]

log = logging.getLogger(__name__)


class ShadowRunner:
    def __init__(self, metrics: Metrics, writer: JsonlWriter) -> None:
        self.metrics = metrics
        self.writer = writer
        self._tasks: set[asyncio.Task[None]] = set()

    def start(
        self,
        ctx: Answering,
        policy: LoadedPolicy,
        body: ChatRequest,
        messages: list[dict[str, Any]],
        primary: tuple[str, str],
    ) -> None:
        """Run ``body`` on the policy's shadow variant in the background, or drop it when the bound is full."""
        settings = ctx.snapshot.config.settings.feedback
        if len(self._tasks) >= settings.shadow_concurrency:
            self.metrics.shadow.child(policy.name, "dropped").inc()
            return
        task = asyncio.get_running_loop().create_task(self._run(ctx, policy, body, messages, primary))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        ctx: Answering,
        policy: LoadedPolicy,
        body: ChatRequest,
        messages: list[dict[str, Any]],
        primary: tuple[str, str],
    ) -> None:
        assert policy.spec.shadow is not None
        variant = policy.variant(policy.spec.shadow.variant)
        assert variant is not None
        snapshot = ctx.snapshot
        upstream = snapshot.upstreams[variant.upstream]
        exchange = Exchange(ctx.exchange.request_id, "POST", "/v1/chat/completions", time.perf_counter())
        exchange.policy, exchange.variant, exchange.prompt_version = policy.name, variant.name, variant.prompt_version
        shadow_ctx = Answering(ctx.request, ctx.runtime, snapshot, exchange)
        body.stream = False
        body.stream_options = None
        try:
            result = await answer(
                shadow_ctx, Route(policy, variant, upstream, variant.pipeline, variant.chain), body, False
            )
        except PrefitError as exc:
            self.metrics.shadow.child(policy.name, "failed").inc()
            log.info("shadow call failed", extra={"fields": {"request_id": exchange.request_id, "code": exc.code}})
            return
        assert isinstance(result, dict)
        record = {
            "id": exchange.request_id,
            "input": messages,
            "expected": None,
            "outputs": {primary[0]: primary[1], variant.name: answer_text(result) or ""},
            "metadata": {"policy": policy.name, "source": "shadow"},
        }
        path = snapshot.config.base_dir / snapshot.config.settings.feedback.shadow_dir / f"{policy.name}.jsonl"
        stored = self.writer.put(Path(path), dump_line(record, upstream.scrub))
        self.metrics.shadow.child(policy.name, "stored" if stored else "dropped").inc()

    async def wait(self) -> None:
        """Wait for the copies in flight (tests, shutdown)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.wait()
