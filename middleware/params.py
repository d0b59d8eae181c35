"""``upstream_model``, ``params``, ``force`` and ``max_tokens_cap``: the first layer, mapping a logical
model onto the upstream one."""

from __future__ import annotations

from typing import Any, Self

from gateway.policy import PolicySpec
from gateway.wire import get_param
from middleware.base import BuildContext, Call, PassThrough

__all__ = ["ParamsLayer"]

_TOKEN_LIMITS = ("max_tokens", "max_completion_tokens")


class ParamsLayer(PassThrough):
    """Names the upstream model, fills defaults (client wins), applies forced values (policy wins),
    and clamps the token limit."""

    stage = "render"

    def __init__(
        self, upstream_model: str, defaults: dict[str, Any], forced: dict[str, Any], max_tokens_cap: int | None
    ) -> None:
        self.upstream_model = upstream_model
        self.defaults = tuple(defaults.items())
        self.forced = tuple(forced.items())
        self.max_tokens_cap = max_tokens_cap

    @classmethod
    def build(cls, spec: PolicySpec, context: BuildContext) -> Self | None:
        return cls(spec.upstream_model or context.policy_name, spec.params, spec.force, spec.max_tokens_cap)

    async def prepare(self, call: Call) -> None:
        body = call.body
        body.model = self.upstream_model
        for name, value in self.defaults:
            if get_param(body, name) is None:
                setattr(body, name, value)
        for name, value in self.forced:
            setattr(body, name, value)
        if self.max_tokens_cap is not None:
            self._clamp(call)

    def _clamp(self, call: Call) -> None:
        cap = self.max_tokens_cap
        assert cap is not None
        body = call.body
        present = [name for name in _TOKEN_LIMITS if get_param(body, name) is not None]
        for name in present:
            value = get_param(body, name)
            if isinstance(value, int) and value > cap:
                setattr(body, name, cap)
        if not present:
            body.max_tokens = cap  # type: ignore[attr-defined]
