"""Compiling a chain's step specs: templates checked for the names they may read, ``for_each``
as one expression, routes, and which steps each step reads (``needs``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jinja2

from gateway.engine.chain import ChainStep, StepRoute
from gateway.engine.chain_graph import dependency_issues, step_references
from gateway.engine.pipeline import Pipeline
from middleware.base import LayerError
from middleware.prompt import compile_template

__all__ = ["build_inline_steps"]

_TEMPLATE_NAMES = {"input", "steps", "metadata"}
_ONE_EXPRESSION = re.compile(r"^\s*\{\{(.+)\}\}\s*$", re.DOTALL)


def _compile(source: str | None, field: tuple[str | int, ...], names: set[str]) -> jinja2.Template | None:
    if source is None:
        return None
    template, _ = compile_template(source, field, names)
    return template


def _for_each(source: str, index: int) -> Callable[..., Any]:
    """``{{ expression }}`` compiled to a callable that returns the value itself, not its text."""
    field = ("steps", index, "for_each")
    template = _compile(source, field, _TEMPLATE_NAMES)
    match = _ONE_EXPRESSION.match(source)
    if template is None or match is None:
        raise LayerError(field, "for_each must be one expression, like {{ steps.extract.json.entities }}")
    try:
        return template.environment.compile_expression(match.group(1), undefined_to_none=False)
    except jinja2.TemplateSyntaxError as exc:
        raise LayerError(field, f"template syntax error: {exc.message}") from None


def _step(spec: Any, index: int, last: bool, pipeline: Pipeline | None) -> ChainStep:
    names = _TEMPLATE_NAMES | ({"item"} if spec.for_each is not None else set())
    template = _compile(spec.input, ("steps", index, "input"), names)
    if spec.for_each is not None and (last or spec.input is None):
        why = "the last step's answer is the chain's" if last else "it needs an `input` that uses `item`"
        raise LayerError(("steps", index, "for_each"), f"this step cannot run for_each: {why}")
    route = None
    if spec.route is not None:
        on = _compile(spec.route.on, ("steps", index, "route", "on"), _TEMPLATE_NAMES)
        assert on is not None
        route = StepRoute(on, dict(spec.route.cases), spec.route.default)
    sources = [spec.input, spec.for_each, spec.route.on if spec.route else None]
    compiled = [t for t in (template, route.on if route else None) if t is not None]
    needs = step_references(compiled[0].environment, sources) if compiled else frozenset()
    return ChainStep(
        spec.name,
        spec.model,
        template,
        pipeline,
        for_each=_for_each(spec.for_each, index) if spec.for_each is not None else None,
        concurrency=spec.concurrency,
        route=route,
        needs=needs,
        for_each_source=spec.for_each.strip() if spec.for_each is not None else "",
    )


def build_inline_steps(
    policy: str, specs: list[Any], inline_pipeline: Callable[[int, str], Pipeline]
) -> tuple[ChainStep, ...]:
    """Compile each step; inline prompts get a pipeline from ``inline_pipeline``. Raises ``LayerError``
    (also for a step reading no step, the last step, or steps in a cycle)."""
    if not specs:
        raise LayerError(("steps",), "a chain needs at least one step")
    steps = tuple(
        _step(
            spec,
            index,
            index == len(specs) - 1,
            inline_pipeline(index, spec.system) if spec.system is not None else None,
        )
        for index, spec in enumerate(specs)
    )
    issues = dependency_issues({step.name: step.needs for step in steps}, [step.name for step in steps])
    if issues:
        index, message = issues[0]
        raise LayerError(("steps", index), message)
    return steps
