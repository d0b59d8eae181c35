"""The policy file schema: one logical model name and what the upstream model sees for it.

A policy says *what* to send (model, params, prompts); *where* it goes is only the name of an
upstream from ``prefit.yaml``. Fields grow with each capability; unknown keys are load errors.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MODEL_NAME_PATTERN", "PolicySpec"]

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$"
_FORBIDDEN_PARAMS = {"model", "messages", "stream"}


class PolicySpec(BaseModel):
    """A policy file, ``policies/<name>.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(
        default=None,
        pattern=MODEL_NAME_PATTERN,
        description="The model name clients send; defaults to the file name without extension.",
        examples=["support-bot"],
    )
    description: str | None = Field(default=None, description="What this policy is for, shown in /v1/models.")
    upstream: str | None = Field(
        default=None,
        description="Name of an upstream in prefit.yaml; defaults to default_upstream.",
        examples=["openai"],
    )
    upstream_model: str | None = Field(
        default=None,
        description="The model the upstream is asked for; defaults to the policy's model name.",
        examples=["gpt-4o-mini"],
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Default request parameters; a value the client sends wins.",
        examples=[{"temperature": 0}],
    )

    @field_validator("params")
    @classmethod
    def _no_structural_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(_FORBIDDEN_PARAMS & value.keys())
        if clash:
            raise ValueError(f"{', '.join(clash)} cannot be set in params")
        for name in value:
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                raise ValueError(f"{name!r} is not a request parameter name")
        return value
