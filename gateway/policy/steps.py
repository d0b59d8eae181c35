"""Decomposition: the steps of a chain, mapped with ``for_each`` or branching with ``route``."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from gateway.policy.base import (
    _NAME_PATTERN,
    _Spec,
)


class RouteSpec(_Spec):
    """A step whose policy is chosen per request: the value of ``on`` picks one of ``cases``."""

    on: str = Field(
        description="A Jinja2 template over `input` and `steps`; its rendered text (trimmed) is looked up in `cases`.",
        examples=["{{ steps.classify.output }}"],
    )
    cases: dict[str, str] = Field(
        min_length=1, description="Value -> the policy (model name) that answers this step and the chain's rest."
    )
    default: str | None = Field(
        default=None, description="The policy for a value with no case; without it such a value fails the request."
    )

    @model_validator(mode="before")
    @classmethod
    def _on_key(cls, data: Any) -> Any:
        """YAML 1.1 reads a bare ``on`` key as the boolean true (a key ``True``); here it means ``on``."""
        if isinstance(data, dict) and "on" not in data:
            return {("on" if key in (True, "True") else key): value for key, value in data.items()}
        return data


class StepSpec(_Spec):
    """One link of a chain: another policy, a routed policy, or an inline prompt, fed by a template."""

    name: str = Field(pattern=_NAME_PATTERN, description="Referred to as `steps.<name>` by later steps.")
    model: str | None = Field(default=None, description="A policy (model name) this step calls.")
    system: str | None = Field(
        default=None,
        description="Instead of `model`: an inline system prompt (Jinja2), sent with the chain's own "
        "upstream, upstream_model and params.",
    )
    input: str | None = Field(
        default=None,
        description="The step's user message, a Jinja2 template over `input` (the request's last user message), "
        "`steps.<name>.output` (text) and `steps.<name>.json` (parsed JSON, if any). Default: the original messages.",
        examples=["{{ steps.extract.output }}"],
    )
    for_each: str | None = Field(
        default=None,
        description="A Jinja2 template naming a list from an earlier step's JSON: the step runs once per "
        "element (`item` in its templates); its `json` is the list of results, its `output` their texts, "
        "one per line.",
        examples=["{{ steps.extract.json.entities }}"],
    )
    concurrency: int = Field(
        default=4, ge=1, le=64, description="With `for_each`: how many elements are answered at once."
    )
    route: RouteSpec | None = Field(
        default=None,
        description="Instead of `model` or `system`: pick the policy per request from an earlier step's value; "
        "`steps.<name>.routed` names the one picked.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> StepSpec:
        if sum(target is not None for target in (self.model, self.system, self.route)) != 1:
            raise ValueError("a step needs exactly one of `model`, `system` or `route`")
        if self.for_each is not None and self.route is not None:
            raise ValueError("a step cannot both `route` and run `for_each`")
        return self
