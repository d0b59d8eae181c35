"""The per-request record: everything one request learned on its way, written where it is learned.

The serving edge creates one ``Exchange`` per request; resolution writes what answers it (policy,
variant, upstream, model), the engine adds what the answer cost (tokens, spend, cache use), and the
outermost ASGI layer (``gateway.serving.exchange``) turns it into metrics and one access-log line
exactly once, after the last byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["CLIENT_CLOSED", "Exchange"]

#: nginx's convention for "the client closed the connection before the answer was complete".
CLIENT_CLOSED = 499


@dataclass(slots=True, eq=False)
class Exchange:
    """What one request did, filled in by the layers it passes through."""

    request_id: str
    method: str
    path: str
    start: float
    status: int = 0
    outcome: int | None = None
    policy: str = "none"
    variant: str = "none"
    prompt_version: str = "none"
    upstream: str = "none"
    model: str = "none"
    stream: bool = False
    first_token_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    injected_tokens: int = 0
    error_code: str | None = None
    cache: str | None = None
    caller: str = "anonymous"
    costs: dict[str, float] = field(default_factory=dict)
    usage_missing: int = 0
    calls_upstream: bool = True
    #: The caller named the variant (``x-prefit-variant``): an admin or ``prefit eval``, not production traffic.
    pinned: bool = False
    on_done: list[Callable[[Exchange], None]] = field(default_factory=list)

    @property
    def upstream_labels(self) -> tuple[str, str]:
        """``upstream`` and ``model`` as counted: "none" for a request that calls no upstream (render)."""
        return (self.upstream, self.model) if self.calls_upstream else ("none", "none")

    @property
    def final_status(self) -> int:
        """The status that describes the outcome: a stream that failed after its 200 counts as failed."""
        return self.outcome if self.outcome is not None else self.status

    def add_cost(self, model: str, usd: float | None) -> None:
        """Spend on ``model`` (a bounded label), counted as ``prefit_cost_usd_total`` at the end."""
        if usd:
            self.costs[model] = self.costs.get(model, 0.0) + usd

    @property
    def cost_usd(self) -> float:
        return sum(self.costs.values())

    def add_usage(self, usage: object) -> None:
        if isinstance(usage, dict):
            self.prompt_tokens += _int(usage.get("prompt_tokens"))
            self.completion_tokens += _int(usage.get("completion_tokens"))


def _int(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0
