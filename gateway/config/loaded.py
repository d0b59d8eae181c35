"""What loading produces: frozen policies, their variants, and one ``Config`` (pure data)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config.variants import Allocation, VariantTable
from gateway.engine.chain import Chain
from gateway.engine.pipeline import Pipeline
from gateway.errors import InvalidRequest
from gateway.policy import PolicySpec
from gateway.settings import Settings

__all__ = ["Config", "LoadedPolicy", "LoadedVariant"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedVariant:
    """One servable arm of a policy (a policy without variants has one, ``default``)."""

    name: str
    weight: float
    spec: PolicySpec
    upstream: str
    upstream_model: str
    prompt_version: str
    prompt_hash: str
    pipeline: Pipeline
    chain: Chain | None = None
    #: Why ``/v1/completions`` cannot carry this variant (``file:line:col: field: reason``), else None.
    completions_blocker: str | None = None


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A validated policy with every variant's layers compiled, ready to serve."""

    name: str
    spec: PolicySpec
    source: str
    variants: tuple[LoadedVariant, ...]
    table: VariantTable
    files: tuple[Path, ...] = ()
    #: With an ``experiment``: the adapting shares that ``choose`` uses instead of ``table``.
    allocation: Allocation | None = field(default=None, compare=False)

    @property
    def primary(self) -> LoadedVariant:
        return self.variants[0]

    def variant(self, name: str) -> LoadedVariant | None:
        for variant in self.variants:
            if variant.name == name:
                return variant
        return None

    def select(self, pinned: str | None, sticky: str | None) -> LoadedVariant:
        """The pinned variant when one is named, else the weighted sticky choice. Raises ``InvalidRequest``."""
        if pinned is None:
            return self.choose(sticky)
        found = self.variant(pinned)
        if found is None:
            names = ", ".join(v.name for v in self.variants)
            raise InvalidRequest(
                f"The model '{self.name}' has no variant '{pinned}' (variants: {names}).", code="variant_not_found"
            )
        return found

    def choose(self, sticky: str | None) -> LoadedVariant:
        """The variant for a caller: by weight, the same one for the same sticky value."""
        if len(self.variants) == 1:
            return self.variants[0]
        table = self.allocation.table if self.allocation is not None else self.table
        return self.variants[table.pick(sticky)]


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
    #: Each upstream as ``/readyz`` shows it: ``"ok"``, or why its calls cannot succeed.
    upstream_status: Mapping[str, str] = field(default_factory=dict)
    #: Upstreams that are not ok although the default upstream or a policy uses them: not ready.
    unready_upstreams: tuple[str, ...] = ()
