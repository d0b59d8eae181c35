"""Load and validate every configuration file into one immutable ``Config``.

``serve``, ``check``, ``render`` and hot reload all call ``load_config``. Phase one validates each
file on its own (YAML syntax, schema, ``${VAR}`` expansion); phase two checks what files say about
each other (upstream names, duplicate model names) and builds each policy's layers. Every problem
in every file is collected and raised together as one ``ConfigError``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.errors import ConfigError, ConfigIssue
from gateway.pipeline import LAYER_TYPES, Pipeline
from gateway.policy import MODEL_NAME_PATTERN, PolicySpec
from gateway.settings import DEFAULT_SETTINGS_YAML, Settings
from gateway.yaml_source import Located, YamlProblem, parse_yaml, read_yaml
from middleware.base import BuildContext, Layer, Resources

__all__ = ["Config", "LoadedPolicy", "find_settings_file", "load_config"]

log = logging.getLogger(__name__)
_Model = TypeVar("_Model", bound=BaseModel)
_POLICY_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A validated policy with its layers compiled, ready to serve."""

    name: str
    spec: PolicySpec
    source: str
    upstream: str
    upstream_model: str
    prompt_version: str
    pipeline: Pipeline


@dataclass(frozen=True, slots=True)
class Config:
    """One consistent snapshot of settings and policies; replaced whole on reload, never edited."""

    settings: Settings
    settings_file: str | None
    base_dir: Path
    policies_dir: Path
    policies: Mapping[str, LoadedPolicy]
    loaded_at: float = field(default_factory=time.time)
    unset_env: frozenset[str] = frozenset()


def find_settings_file(explicit: str | os.PathLike[str] | None, cwd: Path | None = None) -> Path | None:
    """The settings file to use: the one named, else ``./prefit.yaml`` if present, else None."""
    if explicit is not None:
        return Path(explicit)
    candidate = (cwd or Path.cwd()) / "prefit.yaml"
    return candidate if candidate.is_file() else None


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _validate(model: type[_Model], located: Located, issues: list[ConfigIssue]) -> _Model | None:
    """Validate YAML data into ``model``, turning each pydantic error into a located issue."""
    data = located.data if located.data is not None else {}
    if not isinstance(data, dict):
        issues.append(ConfigIssue(located.file, "the file must hold a mapping of keys", line=1, column=1))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            loc = tuple(error["loc"])
            message = _message(error)
            issues.append(located.issue(loc, message, key=error["type"] == "extra_forbidden"))
        return None


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message: str = error["msg"]
    return message.removeprefix("Value error, ")


def _load_settings(settings_file: Path | None, issues: list[ConfigIssue]) -> tuple[Settings | None, Located | None]:
    try:
        if settings_file is None:
            located = parse_yaml(DEFAULT_SETTINGS_YAML, "<built-in settings>")
        else:
            located = read_yaml(settings_file, _display(settings_file))
    except YamlProblem as problem:
        issues.append(problem.issue)
        return None, None
    return _validate(Settings, located, issues), located


def _policy_files(policies_dir: Path) -> list[Path]:
    return sorted(p for p in policies_dir.iterdir() if p.suffix in _POLICY_SUFFIXES and p.is_file())


def _build_pipeline(spec: PolicySpec, context: BuildContext) -> Pipeline:
    layers: list[Layer] = []
    for layer_type in LAYER_TYPES:
        layer = layer_type.build(spec, context)
        if layer is not None:
            layers.append(layer)
    return Pipeline(tuple(layers))


def _load_policy(
    path: Path, settings: Settings, resources: Resources | None, issues: list[ConfigIssue]
) -> LoadedPolicy | None:
    display = _display(path)
    try:
        located = read_yaml(path, display)
    except YamlProblem as problem:
        issues.append(problem.issue)
        return None
    spec = _validate(PolicySpec, located, issues)
    if spec is None:
        return None
    name = spec.model or path.stem
    before = len(issues)
    if spec.model is None and not re.match(MODEL_NAME_PATTERN, name):
        issues.append(located.issue((), f"file name {path.stem!r} is not a usable model name; set `model:`"))
    upstream = spec.upstream or settings.default_upstream
    if upstream is None:
        issues.append(located.issue(("upstream",), "no upstream named and settings have no default_upstream", key=True))
    elif upstream not in settings.upstreams:
        known = ", ".join(sorted(settings.upstreams))
        issues.append(located.issue(("upstream",), f"unknown upstream {upstream!r} (known: {known})"))
    if len(issues) > before or upstream is None:
        return None
    try:
        pipeline = _build_pipeline(spec, BuildContext(name, path.parent, resources))
    except ValueError as exc:
        issues.append(located.issue((), str(exc)))
        return None
    return LoadedPolicy(
        name=name,
        spec=spec,
        source=display,
        upstream=upstream,
        upstream_model=spec.upstream_model or name,
        prompt_version="",
        pipeline=pipeline,
    )


def _load_policies(
    policies_dir: Path, settings: Settings, resources: Resources | None, issues: list[ConfigIssue]
) -> dict[str, LoadedPolicy]:
    policies: dict[str, LoadedPolicy] = {}
    for path in _policy_files(policies_dir):
        policy = _load_policy(path, settings, resources, issues)
        if policy is None:
            continue
        if policy.name in policies:
            first = policies[policy.name].source
            issues.append(
                ConfigIssue(policy.source, f"model {policy.name!r} is already served by {first}", field="model")
            )
            continue
        policies[policy.name] = policy
    return policies


def load_config(settings_file: Path | None, *, resources: Resources | None = None, cwd: Path | None = None) -> Config:
    """Load settings and every policy. Raises ``ConfigError`` listing every problem found."""
    issues: list[ConfigIssue] = []
    settings, located = _load_settings(settings_file, issues)
    if settings is None or located is None:
        raise ConfigError(issues)
    base_dir = settings_file.parent if settings_file is not None else (cwd or Path.cwd())
    policies_dir = (base_dir / settings.policies_dir).resolve()
    policies: dict[str, LoadedPolicy] = {}
    if policies_dir.is_dir():
        policies = _load_policies(policies_dir, settings, resources, issues)
    elif settings_file is not None and "policies_dir" in (located.data or {}):
        issues.append(located.issue(("policies_dir",), f"directory not found: {policies_dir}"))
    if issues:
        raise ConfigError(issues)
    if located.unset_env:
        log.warning("unset environment variables expanded to empty: %s", ", ".join(sorted(located.unset_env)))
    return Config(
        settings=settings,
        settings_file=located.file if settings_file is not None else None,
        base_dir=base_dir,
        policies_dir=policies_dir,
        policies=policies,
        unset_env=frozenset(located.unset_env),
    )
