"""Cross-checks of chains over every policy: steps name policies that exist, no cycles, bounded depth."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from gateway.config.loaded import LoadedPolicy
from gateway.config.yaml_source import Located
from gateway.errors import ConfigIssue
from gateway.policy import StepSpec

__all__ = ["MAX_CHAIN_DEPTH", "check_chains"]

log = logging.getLogger(__name__)


#: How deep chains may call chains: each level adds a round trip per step.
MAX_CHAIN_DEPTH = 4


def check_chains(policies: dict[str, LoadedPolicy], located: Mapping[str, Located], issues: list[ConfigIssue]) -> None:
    """Every step names a loaded policy, no chain reaches itself, and nesting stays shallow."""

    def calls(name: str) -> set[str]:
        policy = policies.get(name)
        if policy is None:
            return set()
        return {model for _, steps in _step_lists(policy) for step in steps for _, model in _step_models(step)}

    def depth(name: str, trail: tuple[str, ...]) -> int:
        if name in trail:
            raise _Cycle((*trail, name))
        below = [depth(callee, (*trail, name)) for callee in calls(name) if callee in policies]
        return 1 + max(below, default=0)

    for name, policy in policies.items():
        lists, where = _step_lists(policy), located[name]
        if not lists:
            continue
        for prefix, steps in lists:
            for index, step in enumerate(steps):
                for names, model in _step_models(step):
                    if model not in policies:
                        issue = where.issue((*prefix, index, *names), f"step model {model!r} is not a policy")
                        issues.append(issue)
        try:
            levels = depth(name, ())
        except _Cycle as cycle:
            field = next(
                (*prefix, i)
                for prefix, steps in lists
                for i, step in enumerate(steps)
                if cycle.path[1] in {m for _, m in _step_models(step)}
            )
            issues.append(where.issue(field, f"chain cycle: {' -> '.join(cycle.path)}"))
            continue
        if levels > MAX_CHAIN_DEPTH:
            issues.append(where.issue(("steps",), f"chains nest {levels} deep; at most {MAX_CHAIN_DEPTH}", key=True))


def _step_lists(policy: LoadedPolicy) -> list[tuple[tuple[str | int, ...], list[StepSpec]]]:
    """The policy's steps and each variant's own (a variant may override ``steps``), with their fields."""
    found: list[tuple[tuple[str | int, ...], list[StepSpec]]] = []
    if policy.spec.steps:
        found.append((("steps",), policy.spec.steps))
    for index, arm in enumerate(policy.spec.variants):
        if "steps" in arm.overrides and policy.variants[index].spec.steps:
            found.append((("variants", index, "steps"), policy.variants[index].spec.steps))
    return found


def _step_models(step: StepSpec) -> list[tuple[tuple[str, ...], str]]:
    """The policies a step may call, each with the field that names it (a route names several)."""
    if step.route is not None:
        found = [(("route", "cases", value), model) for value, model in step.route.cases.items()]
        return found + ([(("route", "default"), step.route.default)] if step.route.default else [])
    return [(("model",), step.model)] if step.model is not None else []


class _Cycle(Exception):
    def __init__(self, path: tuple[str, ...]) -> None:
        super().__init__(" -> ".join(path))
        self.path = path
