"""Phase two for policy files: cross-checks, variants and compiled layers, one file at a time."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.chains import check_chains
from gateway.config.files import PolicyFiles
from gateway.config.loaded import LoadedPolicy, LoadedVariant
from gateway.config.validation import display_path, error_message, validate_located
from gateway.config.variants import Allocation, VariantTable
from gateway.config.yaml_source import Located, YamlProblem, read_yaml
from gateway.engine.chain import Chain
from gateway.engine.chain_build import build_inline_steps
from gateway.engine.experiment import allocate
from gateway.engine.pipeline import LAYER_TYPES, Pipeline
from gateway.errors import ConfigIssue
from gateway.policy import MODEL_NAME_PATTERN, PolicySpec, PromptSpec
from gateway.settings import Settings
from middleware.base import BuildContext, Layer, LayerError, Resources

__all__ = ["PolicyLoader", "load_policies", "load_policy", "policy_files"]

log = logging.getLogger(__name__)


_POLICY_SUFFIXES = (".yaml", ".yml")


#: Keys about the policy's variants as a whole, left out of each variant's own spec.
_POLICY_ONLY = frozenset({"variants", "experiment", "shadow", "capture"})


def policy_files(policies_dir: Path) -> list[Path]:
    return sorted(p for p in policies_dir.iterdir() if p.suffix in _POLICY_SUFFIXES and p.is_file())


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _build_layers(spec: PolicySpec, context: BuildContext) -> tuple[list[Layer], str]:
    """Every layer the spec uses, in order, and the prompt's content hash. Raises ``LayerError``."""
    layers: list[Layer] = []
    prompt_hash = ""
    for layer_type in LAYER_TYPES:
        layer = layer_type.build(spec, context)
        if layer is not None:
            layers.append(layer)
            prompt_hash = getattr(layer, "source_hash", "") or prompt_hash
    return layers, prompt_hash


class PolicyLoader:
    """Phase two for one policy file: cross-checks, variants and compiled layers."""

    def __init__(
        self,
        path: Path,
        located: Located,
        settings: Settings,
        settings_dir: Path,
        resources: Resources | None,
        issues: list[ConfigIssue],
    ) -> None:
        self.path = path
        self.located = located
        self.settings = settings
        self.resources = resources
        self.issues = issues
        self.files = PolicyFiles(path.parent, [path.parent, settings_dir], Path.cwd())

    def issue(self, field: tuple[str | int, ...], message: str, *, key: bool = False) -> None:
        self.issues.append(self.located.issue(field, message, key=key))

    def layer_issue(self, error: LayerError, prefix: tuple[str | int, ...]) -> None:
        field = (*prefix, *error.field)
        if error.file is not None:
            dotted = ".".join(str(part) for part in field)
            issue = ConfigIssue(error.file, error.message, line=error.line, column=error.column, field=dotted)
            self.issues.append(issue)
        else:
            self.issue(field, error.message)

    def upstream_of(self, spec: PolicySpec, prefix: tuple[str | int, ...]) -> str | None:
        upstream = spec.upstream or self.settings.default_upstream
        if upstream is None:
            self.issue((*prefix, "upstream"), "no upstream named and settings have no default_upstream", key=True)
            return None
        if upstream not in self.settings.upstreams:
            known = ", ".join(sorted(self.settings.upstreams))
            self.issue((*prefix, "upstream"), f"unknown upstream {upstream!r} (known: {known})")
            return None
        return upstream

    def variant(
        self,
        name: str,
        weight: float,
        spec: PolicySpec,
        policy_name: str,
        prefix: tuple[str | int, ...],
        overridden: set[str],
    ) -> LoadedVariant | None:
        upstream = self.upstream_of(spec, prefix if "upstream" in overridden else ())
        if upstream is None:
            return None
        fallback_prefix = prefix if "fallbacks" in overridden else ()
        for index, fallback in enumerate(spec.fallbacks):
            if fallback.upstream not in self.settings.upstreams:
                known = ", ".join(sorted(self.settings.upstreams))
                self.issue(
                    (*fallback_prefix, "fallbacks", index, "upstream"),
                    f"unknown upstream {fallback.upstream!r} (known: {known})",
                )
                return None
        context = BuildContext(
            policy_name,
            self.path.parent,
            self.files,
            supports_json_schema=self.settings.upstreams[upstream].supports_json_schema,
            resources=self.resources,
        )
        issue_prefix = prefix if overridden else ()
        try:
            layers, prompt_hash = _build_layers(spec, context)
            chain = self.chain(spec, policy_name, context) if spec.steps else None
        except LayerError as error:
            self.layer_issue(error, issue_prefix if error.field and error.field[0] in overridden else ())
            return None
        if chain is not None and (spec.few_shot or spec.output):
            self.issue(
                (*issue_prefix, "steps"),
                "a chain's few_shot and output apply to no step: set them in the policy a step calls",
            )
            return None
        version = spec.prompt.version if spec.prompt and spec.prompt.version else "none"
        blocker = self.completions_blocker(spec, prefix, overridden)
        return LoadedVariant(
            name=name,
            weight=weight,
            spec=spec,
            upstream=upstream,
            upstream_model=spec.upstream_model or policy_name,
            prompt_version=version,
            prompt_hash=prompt_hash,
            pipeline=Pipeline(tuple(layers)),
            chain=chain,
            completions_blocker=blocker,
        )

    def completions_blocker(self, spec: PolicySpec, prefix: tuple[str | int, ...], overridden: set[str]) -> str | None:
        """The first layer that reads or edits a chat reply, or runs chat steps: plain completions
        (a prompt string in, text out) cannot carry it. Prompt, examples, retrieval and params only
        shape the request and are laid out in the prompt text (``gateway.serving.completions``)."""
        found: tuple[tuple[str, ...], str] | None = None
        if spec.steps:
            found = ("steps",), "a chain runs chat steps"
        elif spec.output is not None:
            found = ("output",), "output validation checks a chat reply"
        elif spec.prompt is not None and spec.prompt.reasoning is not None:
            found = ("prompt", "reasoning"), "reasoning extraction edits a chat reply"
        if found is None:
            return None
        field, why = found
        where = (*prefix, *field) if field[0] in overridden else field
        return str(self.located.issue(where, f"{why}, which /v1/completions cannot carry", key=True))

    def chain(self, spec: PolicySpec, policy_name: str, context: BuildContext) -> Chain:
        """Compile a chain's steps; an inline step is the chain's own settings with its ``system`` prompt."""

        def inline_pipeline(index: int, system: str) -> Pipeline:
            prompt = PromptSpec(system=system, vars=spec.prompt.vars if spec.prompt else {})
            inline = spec.model_copy(update={"prompt": prompt, "few_shot": None, "output": None, "steps": []})
            try:
                layers, _ = _build_layers(inline, context)
            except LayerError as error:
                field = ("steps", index, "system")
                raise LayerError(field, error.message, file=error.file, line=error.line, column=error.column) from None
            return Pipeline(tuple(layers))

        metadata_keys = tuple(spec.prompt.metadata) if spec.prompt else ()
        return Chain(policy_name, build_inline_steps(policy_name, spec.steps, inline_pipeline), metadata_keys)

    def variant_spec(self, base: dict[str, Any], index: int, overrides: dict[str, Any]) -> PolicySpec | None:
        merged = _deep_merge(base, overrides)
        try:
            return PolicySpec.model_validate(merged)
        except ValidationError as exc:
            for error in exc.errors(include_url=False, include_input=False):
                loc = tuple(error["loc"])
                if loc and loc[0] in overrides:
                    key = error["type"] == "extra_forbidden"
                    self.issue(("variants", index, *loc), error_message(error, PolicySpec), key=key)
            return None

    def load(self) -> LoadedPolicy | None:
        spec = validate_located(PolicySpec, self.located, self.issues)
        if spec is None:
            return None
        if spec.eval is not None:
            try:
                self.files.resolve(("eval", "dataset"), spec.eval.dataset)
            except LayerError as error:
                self.layer_issue(error, ())
                return None
        name = spec.model or self.path.stem
        if spec.model is None and not re.match(MODEL_NAME_PATTERN, name):
            self.issue((), f"file name {self.path.stem!r} is not a usable model name; set `model:`")
            return None
        before = len(self.issues)
        variants: list[LoadedVariant | None] = []
        if not spec.variants:
            variants.append(self.variant("default", 1.0, spec, name, (), set()))
        else:
            base = {k: v for k, v in self.located.data.items() if k not in _POLICY_ONLY}
            for index, arm in enumerate(spec.variants):
                arm_spec = self.variant_spec(base, index, arm.overrides)
                if arm_spec is not None:
                    prefix = ("variants", index)
                    variants.append(self.variant(arm.name, arm.weight, arm_spec, name, prefix, set(arm.overrides)))
        if len(self.issues) > before or not variants or any(v is None for v in variants):
            return None
        loaded = tuple(v for v in variants if v is not None)
        allocation = None
        if spec.experiment is not None:
            names, weights = [v.name for v in loaded], [v.weight for v in loaded]
            allocation = Allocation(name, allocate(names, weights, {}, spec.experiment))
        return LoadedPolicy(
            name=name,
            spec=spec,
            source=self.located.file,
            variants=loaded,
            table=VariantTable(name, [v.weight for v in loaded]),
            files=tuple(self.files.read_files),
            allocation=allocation,
        )


def load_policy(
    path: Path, settings: Settings, settings_dir: Path, resources: Resources | None, issues: list[ConfigIssue]
) -> tuple[LoadedPolicy, Located] | None:
    try:
        located = read_yaml(path, display_path(path))
    except YamlProblem as problem:
        issues.append(problem.issue)
        return None
    policy = PolicyLoader(path, located, settings, settings_dir, resources, issues).load()
    return None if policy is None else (policy, located)


def load_policies(
    policies_dir: Path, settings: Settings, settings_dir: Path, resources: Resources | None, issues: list[ConfigIssue]
) -> dict[str, LoadedPolicy]:
    policies: dict[str, LoadedPolicy] = {}
    located: dict[str, Located] = {}
    for path in policy_files(policies_dir):
        loaded = load_policy(path, settings, settings_dir, resources, issues)
        if loaded is None:
            continue
        policy, where = loaded
        if policy.name in policies:
            first = policies[policy.name].source
            issues.append(where.issue(("model",), f"model {policy.name!r} is already served by {first}"))
            continue
        policies[policy.name] = policy
        located[policy.name] = where
    check_chains(policies, located, issues)
    return policies
