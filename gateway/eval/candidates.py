"""Candidate prompts as real variants: a policy plus generated arms, served by the real gateway.

``prefit optimize``, ``prefit advise`` (its k-sweep) and ``prefit export-finetune`` all need a
variant that is not in the policy file yet: other few-shot examples, another system prompt, no
examples at all. Each one is written as an ordinary variant override into a copy of the policy
file placed beside the original (a hidden name without a policy suffix, so no loader or reloader
ever serves it), loaded with the real loader and deleted at once. ``file:`` references therefore
resolve exactly as in the original, and a candidate is measured through the same layers as
production.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.config.load import Config, LoadedPolicy, load_config, load_policy_file
from gateway.eval.runner import EvalItem, ItemResult, Runner, in_process_gateway
from gateway.eval.scoring import Scorer
from gateway.retrieval.resources import ResourceHub

__all__ = ["Arm", "Session", "arm_overrides", "example_records", "load_with_arms", "policy_path", "serve_arms"]


@dataclass(frozen=True, slots=True)
class Arm:
    """One candidate: its few-shot examples (``None``: the policy's own) and system prompt (``None``: same)."""

    name: str
    examples: tuple[EvalItem, ...] | None = None
    system: str | None = None
    #: A variant of the policy whose own overrides come first (None: the policy itself).
    based_on: str | None = None

    @property
    def k(self) -> int | None:
        return None if self.examples is None else len(self.examples)


def example_records(items: Sequence[EvalItem]) -> list[dict[str, Any]]:
    """Items as few-shot ``{input, output}`` records (the policy file's example format)."""
    return [{"input": item.input, "output": item.expected} for item in items]


def arm_overrides(arm: Arm) -> dict[str, Any]:
    """The variant override an arm stands for (deep-merged over the policy by the loader)."""
    overrides: dict[str, Any] = {}
    if arm.examples is not None:
        if arm.examples:
            records = example_records(arm.examples)
            overrides["few_shot"] = {"examples": records, "max_examples": len(records)}
        else:
            overrides["few_shot"] = None
    if arm.system is not None:
        overrides["prompt"] = {"system": arm.system}
    return overrides


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        merged[key] = _merge(current, value) if isinstance(value, dict) and isinstance(current, dict) else value
    return merged


def _arm_entry(arm: Arm, variants: list[dict[str, Any]]) -> dict[str, Any]:
    base: dict[str, Any] = {}
    if arm.based_on is not None:
        found = next((v for v in variants if v.get("name") == arm.based_on), None)
        if found is None:
            raise ValueError(f"no variant {arm.based_on!r}")
        base = {k: v for k, v in found.items() if k not in ("name", "weight")}
    return {**_merge(base, arm_overrides(arm)), "name": arm.name, "weight": 0}


def policy_path(policy: LoadedPolicy) -> Path:
    source = Path(policy.source)
    return source if source.is_absolute() else Path.cwd() / source


def load_with_arms(config: Config, policy: LoadedPolicy, arms: Sequence[Arm], resources: ResourceHub) -> Config:
    """``config`` with ``policy`` reloaded from its file plus ``arms`` as zero-weight variants.

    Raises ``ConfigError`` if an arm does not load (e.g. an example the schema refuses)."""
    path = policy_path(policy)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data["model"] = policy.name
    variants = list(data.get("variants") or [{"name": policy.primary.name, "weight": 1}])
    variants += [_arm_entry(arm, variants) for arm in arms]
    data["variants"] = variants
    temp = path.with_name(f".{path.stem}.candidates-{os.getpid()}-{secrets.token_hex(4)}.tmp")
    temp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    try:
        loaded = load_policy_file(temp, config, resources)
    finally:
        temp.unlink(missing_ok=True)
    loaded = dataclasses.replace(loaded, source=policy.source)
    return dataclasses.replace(config, policies={**config.policies, policy.name: loaded})


@dataclass(slots=True)
class Session:
    """A gateway serving the policy with its candidate arms, and a runner over it."""

    policy: LoadedPolicy
    runner: Runner
    use_cache: bool

    async def run(
        self, variant: str, items: Sequence[EvalItem], advance: Callable[[ItemResult], None] | None = None
    ) -> list[ItemResult]:
        """Every item once through ``variant``; results in item order."""
        import asyncio

        async def one(item: EvalItem) -> ItemResult:
            result = await self.runner.run_item(item, variant, 0, self.use_cache)
            if advance is not None:
                advance(result)
            return result

        return list(await asyncio.gather(*(one(item) for item in items)))


@contextlib.asynccontextmanager
async def serve_arms(
    settings_file: Path | None,
    policy_name: str,
    arms: Sequence[Arm],
    scorers: list[Scorer],
    cache_dir: Path,
    concurrency: int,
    use_cache: bool = True,
) -> AsyncIterator[Session]:
    """Load the configuration afresh with ``arms`` added and serve it in this process.

    A fresh resource hub each time: the in-process gateway owns and closes the one it is given."""
    hub = ResourceHub()
    config = load_config(settings_file, resources=hub)
    hub.configure(config.settings, config.base_dir.resolve())
    policy = config.policies.get(policy_name)
    if policy is None:
        hub.close()
        raise ValueError(f"no policy serves {policy_name!r}")
    try:
        config = load_with_arms(config, policy, arms, hub)
    except BaseException:
        hub.close()
        raise
    loaded = config.policies[policy_name]
    async with in_process_gateway(config, hub) as (url, key):
        runner = Runner(url, key, loaded, scorers, cache_dir, concurrency)
        try:
            yield Session(loaded, runner, use_cache)
        finally:
            await runner.close()
