"""Retries, fallbacks and circuit breaking around upstream calls, within one request deadline.

An attempt that fails before any byte reached the client is retried on the same upstream when
the failure is transient (a connection error, 429, 500, 502, 503, 504), after an exponential
backoff with full jitter or the upstream's own ``Retry-After``. When the retries are spent, the
upstream timed out, or its circuit is open, the policy's ``fallbacks`` are tried in order. A client
error (another 4xx) is the request's fault and is returned at once. No wait may outlast the
request's deadline. Failures after a stream began are never retried: the client already has part
of an answer.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gateway.errors import CircuitOpen, UpstreamError, UpstreamStatus, UpstreamTimeout, UpstreamUnreachable
from gateway.metrics import Metrics
from gateway.settings import ResilienceSettings
from gateway.upstream.base import Upstream

__all__ = ["Breaker", "Resilience", "Target"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Target:
    """One place an answer may come from: an upstream and the model to ask there."""

    upstream: Upstream
    model: str | None


class Breaker:
    """Per-upstream circuit breaker: open after N consecutive failures, one trial after a pause.

    Thresholds are read from the live settings, so a reload changes them for existing breakers.
    """

    def __init__(self, name: str, settings: Callable[[], ResilienceSettings], metrics: Metrics) -> None:
        self.name = name
        self._settings = settings
        self.metrics = metrics
        self.failures = 0
        self.opened_at: float | None = None
        self.trial = False
        #: What the last counted failure was, for the fast-failing error to name its cause.
        self.last_failure = ""

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if time.monotonic() - self.opened_at >= self._settings().breaker_reset_s and not self.trial:
            self.trial = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures = 0
        self.trial = False
        if self.opened_at is not None:
            self.opened_at = None
            self.metrics.circuit_open.child(self.name).set(0)

    def abandoned(self) -> None:
        """The caller gave up (a client hung up) mid-call: a trial in flight proves nothing either way,
        so the next caller may try again rather than the circuit staying open for good."""
        self.trial = False

    def failed(self, cause: str = "") -> None:
        self.failures += 1
        self.last_failure = cause or self.last_failure
        if self.trial or self.failures >= self._settings().breaker_failures:
            self.trial = False
            self.opened_at = time.monotonic()
            self.metrics.circuit_open.child(self.name).set(1)


def _counts_against_health(error: UpstreamError) -> bool:
    if isinstance(error, UpstreamStatus):
        return error.status >= 500
    return isinstance(error, UpstreamUnreachable | UpstreamTimeout) or error.reason == "payload"


def _circuit_open(breaker: Breaker) -> CircuitOpen:
    """The fast failure, naming what opened the circuit: "circuit open" alone hides the cause."""
    cause = f" (last failure: {breaker.last_failure})" if breaker.last_failure else ""
    return CircuitOpen(f"upstream {breaker.name!r} is failing; its circuit is open{cause}")


def _retryable(error: UpstreamError) -> bool:
    if isinstance(error, CircuitOpen):
        return False
    if isinstance(error, UpstreamStatus):
        return error.retryable
    return isinstance(error, UpstreamUnreachable)


def _is_client_error(error: UpstreamError) -> bool:
    return isinstance(error, UpstreamStatus) and 400 <= error.status < 500 and error.status != 429


class Resilience:
    """Shared by all requests: settings plus one breaker per upstream name (kept across reloads)."""

    def __init__(self, settings: ResilienceSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.breakers: dict[str, Breaker] = {}

    def breaker(self, name: str) -> Breaker:
        found = self.breakers.get(name)
        if found is None:
            found = self.breakers[name] = Breaker(name, lambda: self.settings, self.metrics)
        return found

    def _wait(self, attempt: int, error: UpstreamError) -> float:
        s = self.settings
        if isinstance(error, UpstreamStatus) and error.retry_after is not None:
            return error.retry_after
        return random.uniform(0, min(s.backoff_max_s, s.backoff_s * 2**attempt))

    async def call(
        self, targets: list[Target], deadline: float, attempt: Callable[[Target, float], Awaitable[_T]]
    ) -> tuple[Target, _T]:
        """The first answer from ``targets``; ``attempt(target, seconds_left)`` makes one try.

        Raises the last ``UpstreamError`` when every target failed, or ``UpstreamTimeout`` when the
        deadline ran out.
        """
        last: UpstreamError | None = None
        for target in targets:
            breaker = self.breaker(target.upstream.name)
            for tries in range(self.settings.retries + 1):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise last or UpstreamTimeout("the request's deadline passed before an upstream answered")
                if not breaker.allow():
                    self.metrics.count_upstream_error(target.upstream.name, CircuitOpen.reason)
                    last = _circuit_open(breaker)
                    break
                try:
                    result = await attempt(target, left)
                except asyncio.CancelledError:
                    breaker.abandoned()
                    raise
                except UpstreamError as error:
                    last = error
                    if _counts_against_health(error):
                        breaker.failed(error.message)
                    else:
                        breaker.succeeded()
                    if _is_client_error(error):
                        raise
                    if not _retryable(error) or tries == self.settings.retries:
                        break
                    wait = self._wait(tries, error)
                    if wait > self.settings.backoff_max_s or time.monotonic() + wait >= deadline:
                        break
                    self.metrics.upstream_retries.child(target.upstream.name, error.reason).inc()
                    await asyncio.sleep(wait)
                    continue
                except Exception:
                    breaker.failed()
                    raise
                breaker.succeeded()
                return target, result
        assert last is not None
        raise last
