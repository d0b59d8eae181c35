"""Which upstreams the loaded policies use, and whether each can be called (its key)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from gateway.config.loaded import LoadedPolicy
from gateway.config.yaml_source import Located
from gateway.settings import Settings

__all__ = ["upstream_status"]

log = logging.getLogger(__name__)


def _used_upstreams(settings: Settings, policies: Mapping[str, LoadedPolicy]) -> set[str]:
    """The default upstream and every upstream a variant or a fallback of a policy calls."""
    used = {settings.default_upstream} if settings.default_upstream else set()
    for policy in policies.values():
        for variant in policy.variants:
            used.add(variant.upstream)
            used.update(fallback.upstream for fallback in variant.spec.fallbacks)
    return used


def upstream_status(
    settings: Settings, located: Located, policies: Mapping[str, LoadedPolicy]
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Which upstreams lack a key they need, and why: an ``api_key: ${VAR}`` whose VAR is unset only
    warns at load (the file is valid), so without this the first call would be the first to fail."""
    used = _used_upstreams(settings, policies)
    status: dict[str, str] = {}
    unready: list[str] = []
    for name, upstream in settings.upstreams.items():
        if upstream.api_key is not None or not upstream.needs_api_key:
            status[name] = "ok"
            continue
        blank = located.blank_env.get(("upstreams", name, "api_key"), {})
        why = ", ".join(f"{var} is {state}" for var, state in sorted(blank.items()))
        problem = f"no api_key ({why})" if why else "no api_key"
        if name in used:
            unready.append(name)
            log.warning(
                "upstream %r has %s: its calls will fail and /readyz answers 503 until it is set", name, problem
            )
        else:
            problem += "; unused"
        status[name] = problem
    return status, tuple(unready)
