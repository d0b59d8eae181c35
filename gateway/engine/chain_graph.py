"""Which steps of a chain each step reads, so independent steps can run at once.

A step depends on the steps its templates name as ``steps.X`` (or ``steps["X"]``). Jinja2's
``meta.find_undeclared_variables`` only reports ``steps`` itself, so the template's syntax tree is
walked for attribute and item reads on the name ``steps``. Load checks use the same references:
a reference to no step, a cycle, or a step reading the last one (whose answer is the chain's)
are configuration errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import jinja2
from jinja2 import nodes

__all__ = ["dependency_issues", "step_references"]


def step_references(environment: jinja2.Environment, sources: Iterable[str | None]) -> frozenset[str]:
    """The step names read by ``sources`` (templates); sources that do not parse read nothing."""
    names: set[str] = set()
    for source in sources:
        if source is None:
            continue
        try:
            parsed = environment.parse(source)
        except jinja2.TemplateSyntaxError:
            continue
        names |= _read_names(parsed)
    return frozenset(names)


def _read_names(parsed: nodes.Template) -> set[str]:
    names: set[str] = set()
    for node in parsed.find_all(nodes.Getattr):
        if _is_steps(node.node):
            names.add(node.attr)
    for item in parsed.find_all(nodes.Getitem):
        if _is_steps(item.node) and isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str):
            names.add(item.arg.value)
    return names


def _is_steps(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "steps"


def dependency_issues(needs: Mapping[str, frozenset[str]], order: list[str]) -> list[tuple[int, str]]:
    """Problems with the steps' references, as (step index, message): unknown names, the last step, cycles."""
    issues: list[tuple[int, str]] = []
    known, last = set(order), order[-1]
    for index, name in enumerate(order):
        unknown = sorted(needs[name] - known)
        if unknown:
            issues.append((index, f"step {name!r} reads steps that do not exist: {', '.join(unknown)}"))
        if name != last and last in needs[name]:
            issues.append((index, f"step {name!r} reads the last step {last!r}, whose answer is the chain's"))
    cycle = _cycle(needs, order)
    if cycle:
        issues.append((order.index(cycle[0]), f"steps read each other in a cycle: {' -> '.join(cycle)}"))
    return issues


def _cycle(needs: Mapping[str, frozenset[str]], order: list[str]) -> list[str] | None:
    """One cycle among the steps' references, as a path that ends where it starts, or None."""
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if name in trail:
            return [*trail[trail.index(name) :], name]
        if name in done or name not in needs:
            return None
        for needed in sorted(needs[name]):
            found = visit(needed, [*trail, name])
            if found:
                return found
        done.add(name)
        return None

    for name in order:
        found = visit(name, [])
        if found:
            return found
    return None
