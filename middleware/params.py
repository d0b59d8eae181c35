"""``upstream_model`` and ``params``: the first layer, mapping a logical model onto the upstream one."""

from __future__ import annotations

from typing import Any, Self

from gateway.policy import PolicySpec
from middleware.base import BuildContext, Call, PassThrough

__all__ = ["ParamsLayer"]


class ParamsLayer(PassThrough):
    """Names the upstream model and fills in the policy's default parameters.

    A parameter the client sent (with a non-null value) wins over the policy's default.
    """

    stage = "render"

    def __init__(self, upstream_model: str, defaults: dict[str, Any]) -> None:
        self.upstream_model = upstream_model
        self.defaults = tuple(defaults.items())

    @classmethod
    def build(cls, spec: PolicySpec, context: BuildContext) -> Self | None:
        return cls(spec.upstream_model or context.policy_name, spec.params)

    async def prepare(self, call: Call) -> None:
        body = call.body
        body.model = self.upstream_model
        for name, value in self.defaults:
            if getattr(body, name, None) is None:
                setattr(body, name, value)
