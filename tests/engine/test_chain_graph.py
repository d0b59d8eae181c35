"""Which steps a step reads (attribute and item reads on ``steps``), and the load checks on them."""

from __future__ import annotations

import jinja2
import pytest

from gateway.engine.chain import _shown
from gateway.engine.chain_graph import dependency_issues, step_references

ENV = jinja2.Environment()


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("{{ steps.extract.output }}", {"extract"}),
        ("{{ steps['extract'].json.entities }} {{ input }}", {"extract"}),
        ("{% for e in steps.a.json %}{{ e }}{% endfor %}{{ steps.b.output | upper }}", {"a", "b"}),
        ("{{ input }} {{ metadata.team }} {{ item.name }}", set()),
        ("{{ steps[name] }}", set()),  # a computed name cannot be known at load
    ],
)
def test_step_references_walk_the_syntax_tree(source: str, names: set[str]) -> None:
    assert step_references(ENV, [source, None]) == frozenset(names)


def test_dependency_issues_name_unknown_steps_the_last_step_and_cycles() -> None:
    needs = {"a": frozenset({"b"}), "b": frozenset({"a", "ghost"}), "c": frozenset({"z"}), "z": frozenset({"a"})}
    assert dependency_issues(needs, ["a", "b", "c", "z"]) == [
        (1, "step 'b' reads steps that do not exist: ghost"),
        (2, "step 'c' reads the last step 'z', whose answer is the chain's"),
        (0, "steps read each other in a cycle: a -> b -> a"),
    ]
    assert dependency_issues({"a": frozenset(), "b": frozenset({"a"})}, ["a", "b"]) == []


def test_a_non_list_is_shown_truncated() -> None:
    shown = _shown({"text": "x" * 500})
    assert shown.startswith('dict {"text":"xxx') and shown.endswith("...")
    assert len(shown) < 220
    assert _shown(jinja2.StrictUndefined()) == "nothing (the name is undefined)"
