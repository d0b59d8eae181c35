"""Load and validate every configuration file into one immutable ``Config``.

``serve``, ``check``, ``render`` and hot reload all call ``load_config``. Phase one validates each
file on its own (YAML syntax, schema, ``${VAR}`` expansion); phase two checks what files say about
each other (upstream names, duplicate model names) and builds each policy's layers. Every problem
in every file is collected and raised together as one ``ConfigError``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from gateway.config.loaded import Config, LoadedPolicy, LoadedVariant
from gateway.config.policies import load_policies, load_policy
from gateway.config.upstreams import upstream_status
from gateway.config.validation import display_path, validate_located
from gateway.config.yaml_source import Located, YamlProblem, parse_yaml, read_yaml
from gateway.errors import ConfigError, ConfigIssue
from gateway.retrieval.resources import NO_RESOURCES
from gateway.settings import DEFAULT_SETTINGS_YAML, Settings
from middleware.base import Resources

__all__ = ["Config", "LoadedPolicy", "LoadedVariant", "find_settings_file", "load_config", "load_policy_file"]

log = logging.getLogger(__name__)


log = logging.getLogger(__name__)


def find_settings_file(explicit: str | os.PathLike[str] | None, cwd: Path | None = None) -> Path | None:
    """The settings file to use: the one named, else ``./prefit.yaml`` if present, else None."""
    if explicit is not None:
        return Path(explicit)
    candidate = (cwd or Path.cwd()) / "prefit.yaml"
    return candidate if candidate.is_file() else None


def _load_settings(settings_file: Path | None, issues: list[ConfigIssue]) -> tuple[Settings | None, Located | None]:
    try:
        if settings_file is None:
            located = parse_yaml(DEFAULT_SETTINGS_YAML, "<built-in settings>")
        else:
            located = read_yaml(settings_file, display_path(settings_file))
    except YamlProblem as problem:
        issues.append(problem.issue)
        return None, None
    return validate_located(Settings, located, issues), located


def load_policy_file(path: Path, config: Config, resources: Resources | None = None) -> LoadedPolicy:
    """Load one policy file against ``config``'s settings (e.g. a generated candidate beside the real
    one, so its ``file:`` references resolve the same way). Raises ``ConfigError``."""
    issues: list[ConfigIssue] = []
    hub = resources if resources is not None else NO_RESOURCES
    loaded = load_policy(path, config.settings, config.base_dir, hub, issues)
    if loaded is None or issues:
        raise ConfigError(issues or [ConfigIssue(str(path), "the policy did not load")])
    return loaded[0]


def load_config(settings_file: Path | None, *, resources: Resources | None = None, cwd: Path | None = None) -> Config:
    """Load settings and every policy. Raises ``ConfigError`` listing every problem found.

    Layers are built against ``resources`` (the embedder and vector store their searches use); the
    caller owns them and configures them from the returned settings (``ResourceHub.configure``).
    Without any (``prefit check``), searches fail with ``ResourceError`` and nothing is opened.
    The ``Config`` returned is pure data.
    """
    issues: list[ConfigIssue] = []
    settings, located = _load_settings(settings_file, issues)
    if settings is None or located is None:
        raise ConfigError(issues)
    base_dir = settings_file.parent if settings_file is not None else (cwd or Path.cwd())
    hub = resources if resources is not None else NO_RESOURCES
    policies_dir = (base_dir / settings.policies_dir).resolve()
    policies: dict[str, LoadedPolicy] = {}
    if policies_dir.is_dir():
        policies = load_policies(policies_dir, settings, base_dir, hub, issues)
    elif settings_file is not None and "policies_dir" in (located.data or {}):
        issues.append(located.issue(("policies_dir",), f"directory not found: {policies_dir}"))
    if issues:
        raise ConfigError(issues)
    if located.unset_env:
        log.warning("unset environment variables expanded to empty: %s", ", ".join(sorted(located.unset_env)))
    statuses, unready_upstreams = upstream_status(settings, located, policies)
    return Config(
        settings=settings,
        settings_file=located.file if settings_file is not None else None,
        base_dir=base_dir,
        policies_dir=policies_dir,
        policies=policies,
        unset_env=frozenset(located.unset_env),
        upstream_status=statuses,
        unready_upstreams=unready_upstreams,
    )
