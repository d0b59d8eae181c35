"""Rate limits per gateway key and per policy: requests and tokens per minute.

Requests are counted when they are admitted; tokens only once the answer reports its usage, so a
caller over its token budget is refused from its next request on. When the state backend fails,
``rate_limits.on_backend_error`` decides: ``open`` lets requests through, ``closed`` refuses them.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.errors import RateLimited, ServiceUnavailable
from gateway.metrics import Metrics
from gateway.policy import RateLimitSpec
from gateway.settings import Limits, RateLimitSettings
from gateway.state.base import Decision, StateBackend, StateUnavailable

__all__ = ["RateLimiter"]

log = logging.getLogger(__name__)


class RateLimiter:
    def __init__(self, state: StateBackend, settings: RateLimitSettings, metrics: Metrics) -> None:
        self.state = state
        self.settings = settings
        self.metrics = metrics
        self._pending: set[asyncio.Task[None]] = set()

    def _scopes(
        self, caller: str, policy: str, policy_limits: RateLimitSpec | None
    ) -> list[tuple[str, Limits | RateLimitSpec]]:
        scopes: list[tuple[str, Limits | RateLimitSpec]] = [(f"key:{caller}", self.settings.per_key)]
        if policy_limits is not None:
            scopes.append((f"policy:{policy}", policy_limits))
        return scopes

    def applies(self, policy_limits: RateLimitSpec | None) -> bool:
        """Whether any limit concerns this request; when none does, nothing is counted at all."""
        key = self.settings.per_key
        if key.requests_per_minute is not None or key.tokens_per_minute is not None:
            return True
        return policy_limits is not None and (
            policy_limits.requests_per_minute is not None or policy_limits.tokens_per_minute is not None
        )

    async def admit(self, caller: str, policy: str, policy_limits: RateLimitSpec | None) -> None:
        """Count this request, or refuse it. Raises ``RateLimited`` (429) or ``ServiceUnavailable`` (503)."""
        try:
            for scope, limits in self._scopes(caller, policy, policy_limits):
                if limits.tokens_per_minute is not None:
                    self._check(await self.state.hit(f"{scope}:tok", limits.tokens_per_minute, 0), policy, scope)
                if limits.requests_per_minute is not None:
                    self._check(await self.state.hit(f"{scope}:req", limits.requests_per_minute, 1), policy, scope)
        except StateUnavailable:
            if self.settings.on_backend_error == "closed":
                raise ServiceUnavailable("Rate limits cannot be checked right now; try again shortly.") from None

    def _check(self, decision: Decision, policy: str, scope: str) -> None:
        if decision.allowed:
            return
        self.metrics.rate_limited.child(policy).inc()
        who = "this API key" if scope.startswith("key:") else f"the model '{policy}'"
        seconds = int(decision.retry_after_s)
        raise RateLimited(
            f"Rate limit reached for {who}. Try again in {seconds} s.", headers={"retry-after": str(seconds)}
        )

    def record_tokens(self, caller: str, policy: str, policy_limits: RateLimitSpec | None, tokens: int) -> None:
        """Count used tokens in the background; a backend fault only loses this count."""
        names = [
            f"{scope}:tok"
            for scope, limits in self._scopes(caller, policy, policy_limits)
            if limits.tokens_per_minute is not None
        ]
        if not names or tokens <= 0:
            return

        async def add() -> None:
            for name in names:
                try:
                    await self.state.add(name, tokens)
                except StateUnavailable:
                    return

        task = asyncio.get_running_loop().create_task(add())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
