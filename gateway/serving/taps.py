"""What a chat answer feeds besides its client: captured eval items and shadow copies.

``plan`` runs before the policy's layers (they edit the body), decides by sampling whether this
request is captured or shadowed, and keeps the client's messages; ``attach`` picks up the
answer's text once it is complete, without touching what the client receives.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway.metrics import Metrics
from gateway.serving.answer import Answering
from gateway.serving.capture import JsonlWriter, answer_text, capture_item, chat_input, dump_line, tee_text
from gateway.serving.resolve import Route
from gateway.serving.shadow import ShadowRunner
from gateway.wire import ChatRequest

__all__ = ["Plan", "Taps"]


@dataclass(frozen=True, slots=True)
class Plan:
    messages: list[dict[str, Any]]
    capture: bool
    shadow_body: ChatRequest | None


class Taps:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.writer = JsonlWriter()
        self.shadows = ShadowRunner(metrics, self.writer)

    def plan(self, route: Route, chat: ChatRequest, pinned: bool) -> Plan | None:
        """Whether this request is captured or copied; None (the usual case) costs nothing more.
        A pinned request (an admin, ``prefit eval``) is not production traffic: never either."""
        if route.policy is None or route.variant is None or pinned:
            return None
        spec = route.policy.spec
        capture = spec.capture is not None and random.random() < spec.capture.sample
        shadow = (
            spec.shadow is not None
            and spec.shadow.variant != route.variant.name
            and random.random() < spec.shadow.sample
        )
        if not capture and not shadow:
            return None
        return Plan(chat_input(chat), capture, chat.model_copy(deep=True) if shadow else None)

    def attach(
        self, plan: Plan, ctx: Answering, route: Route, result: dict[str, Any] | AsyncIterator[dict[str, Any]]
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """``result`` unchanged for the client; its text goes to the capture file and the shadow copy."""
        if isinstance(result, dict):
            self._answered(plan, ctx, route, answer_text(result) or "")
            return result
        return tee_text(result, lambda text: self._answered(plan, ctx, route, text))

    def _answered(self, plan: Plan, ctx: Answering, route: Route, text: str) -> None:
        policy = route.policy
        assert policy is not None
        if plan.capture and policy.spec.capture is not None:
            config = ctx.snapshot.config
            path = config.base_dir / policy.spec.capture.to.removeprefix("file:")
            line = dump_line(capture_item(ctx.exchange, plan.messages, text), route.upstream.scrub)
            stored = self.writer.put(path, line)
            self.metrics.captured.child(policy.name, "stored" if stored else "dropped").inc()
        if plan.shadow_body is not None:
            self.shadows.start(ctx, policy, plan.shadow_body, plan.messages, (ctx.exchange.variant, text))

    async def close(self) -> None:
        await self.shadows.close()
        await self.writer.close()
