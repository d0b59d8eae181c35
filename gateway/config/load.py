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
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.config.files import PolicyFiles
from gateway.config.variants import Allocation, VariantTable
from gateway.config.yaml_source import Located, YamlProblem, parse_yaml, read_yaml
from gateway.engine.chain import Chain
from gateway.engine.chain_build import build_inline_steps
from gateway.engine.experiment import allocate
from gateway.engine.pipeline import LAYER_TYPES, Pipeline
from gateway.errors import ConfigError, ConfigIssue, InvalidRequest, unknown_key
from gateway.policy import MODEL_NAME_PATTERN, PolicySpec, PromptSpec, StepSpec
from gateway.retrieval.resources import NO_RESOURCES
from gateway.settings import DEFAULT_SETTINGS_YAML, Settings
from middleware.base import BuildContext, Layer, LayerError, Resources

__all__ = ["Config", "LoadedPolicy", "LoadedVariant", "find_settings_file", "load_config", "load_policy_file"]

log = logging.getLogger(__name__)
_Model = TypeVar("_Model", bound=BaseModel)
_POLICY_SUFFIXES = (".yaml", ".yml")
#: Keys about the policy's variants as a whole, left out of each variant's own spec.
_POLICY_ONLY = frozenset({"variants", "experiment", "shadow", "capture"})
#: How deep chains may call chains: each level adds a round trip per step.
MAX_CHAIN_DEPTH = 4


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
            message = _message(error, model)
            issues.append(located.issue(loc, message, key=error["type"] == "extra_forbidden"))
        return None


def _message(error: Any, model: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        loc = tuple(error["loc"])
        return unknown_key(str(loc[-1]), _keys_at(model, loc[:-1]))
    if kind == "missing":
        return "required key is missing"
    message: str = error["msg"]
    return message.removeprefix("Value error, ")


def _keys_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The keys allowed in the mapping at ``loc`` of ``model``'s data (none if it is not a model)."""
    current: Any = model
    for part in loc:
        current = _child(current, part)
    found = _model_in(current)
    return list(found.model_fields) if found is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """``annotation`` if it is a model, else the first model among a union's members."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next((m for m in map(_model_in, typing.get_args(annotation)) if m is not None), None)
    return None


def _child(annotation: Any, part: str | int) -> Any:
    """The type of ``part`` inside a value of type ``annotation``; a union is searched member by member."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found = annotation.model_fields.get(str(part))
        return found.annotation if found is not None else None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple) and isinstance(part, int) and args:
        return args[0]
    if origin is dict and isinstance(part, str) and len(args) == 2:
        return args[1]
    if origin in (typing.Union, types.UnionType):
        members = [m for m in (_child(arg, part) for arg in args) if m is not None]
        # pydantic names the union member in the error's location (``list[ExampleSpec]``): skip it.
        return members[0] if members else annotation
    return None


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


def _check_chains(policies: dict[str, LoadedPolicy], located: Mapping[str, Located], issues: list[ConfigIssue]) -> None:
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


class _PolicyLoader:
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
                    self.issue(("variants", index, *loc), _message(error, PolicySpec), key=key)
            return None

    def load(self) -> LoadedPolicy | None:
        spec = _validate(PolicySpec, self.located, self.issues)
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


def _load_policy(
    path: Path, settings: Settings, settings_dir: Path, resources: Resources | None, issues: list[ConfigIssue]
) -> tuple[LoadedPolicy, Located] | None:
    try:
        located = read_yaml(path, _display(path))
    except YamlProblem as problem:
        issues.append(problem.issue)
        return None
    policy = _PolicyLoader(path, located, settings, settings_dir, resources, issues).load()
    return None if policy is None else (policy, located)


def _load_policies(
    policies_dir: Path, settings: Settings, settings_dir: Path, resources: Resources | None, issues: list[ConfigIssue]
) -> dict[str, LoadedPolicy]:
    policies: dict[str, LoadedPolicy] = {}
    located: dict[str, Located] = {}
    for path in _policy_files(policies_dir):
        loaded = _load_policy(path, settings, settings_dir, resources, issues)
        if loaded is None:
            continue
        policy, where = loaded
        if policy.name in policies:
            first = policies[policy.name].source
            issues.append(where.issue(("model",), f"model {policy.name!r} is already served by {first}"))
            continue
        policies[policy.name] = policy
        located[policy.name] = where
    _check_chains(policies, located, issues)
    return policies


def load_policy_file(path: Path, config: Config, resources: Resources | None = None) -> LoadedPolicy:
    """Load one policy file against ``config``'s settings (e.g. a generated candidate beside the real
    one, so its ``file:`` references resolve the same way). Raises ``ConfigError``."""
    issues: list[ConfigIssue] = []
    hub = resources if resources is not None else NO_RESOURCES
    loaded = _load_policy(path, config.settings, config.base_dir, hub, issues)
    if loaded is None or issues:
        raise ConfigError(issues or [ConfigIssue(str(path), "the policy did not load")])
    return loaded[0]


def _used_upstreams(settings: Settings, policies: Mapping[str, LoadedPolicy]) -> set[str]:
    """The default upstream and every upstream a variant or a fallback of a policy calls."""
    used = {settings.default_upstream} if settings.default_upstream else set()
    for policy in policies.values():
        for variant in policy.variants:
            used.add(variant.upstream)
            used.update(fallback.upstream for fallback in variant.spec.fallbacks)
    return used


def _upstream_status(
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
        policies = _load_policies(policies_dir, settings, base_dir, hub, issues)
    elif settings_file is not None and "policies_dir" in (located.data or {}):
        issues.append(located.issue(("policies_dir",), f"directory not found: {policies_dir}"))
    if issues:
        raise ConfigError(issues)
    if located.unset_env:
        log.warning("unset environment variables expanded to empty: %s", ", ".join(sorted(located.unset_env)))
    upstream_status, unready_upstreams = _upstream_status(settings, located, policies)
    return Config(
        settings=settings,
        settings_file=located.file if settings_file is not None else None,
        base_dir=base_dir,
        policies_dir=policies_dir,
        policies=policies,
        unset_env=frozenset(located.unset_env),
        upstream_status=upstream_status,
        unready_upstreams=unready_upstreams,
    )
