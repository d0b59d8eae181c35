"""Scorers for ``prefit eval``: each turns (output, expected) into a score from 0 to 1.

A policy names them in ``eval.metrics``: ``exact_match`` (normalised), ``contains``, ``regex``
(the expected value is the pattern) or ``{regex: pattern}``, ``json_valid`` (against the policy's
output schema when it has one), ``{json_field: path}`` and ``{python: "module:function"}``, a
user scorer called as ``function(output, expected, item)``, and ``{judge: {model: POLICY, pass: ">=4"}}``,
a policy that grades each answer (``gateway.eval.judge``; scored after the calls, not here).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema
import orjson

__all__ = ["JudgeSpec", "Scorer", "build_scorers", "normalise"]

ScoreFn = Callable[[str, Any, dict[str, Any]], float]


_PASS = re.compile(r"^\s*(>=|<=|>|<|==)\s*(-?[0-9]*\.?[0-9]+)\s*$")


@dataclass(frozen=True, slots=True)
class JudgeSpec:
    """A judge scorer: the grading policy and the test its number must pass."""

    model: str
    op: str
    threshold: float

    def passes(self, value: float) -> bool:
        return {
            ">=": value >= self.threshold,
            "<=": value <= self.threshold,
            ">": value > self.threshold,
            "<": value < self.threshold,
            "==": value == self.threshold,
        }[self.op]


@dataclass(frozen=True, slots=True)
class Scorer:
    name: str
    score: ScoreFn
    #: Set for a judge scorer, whose score comes from another call after the item's own.
    judge: JudgeSpec | None = None


def _pending(output: str, expected: Any, item: dict[str, Any]) -> float:
    return 0.0


def _judge(arg: Any) -> Scorer:
    if not isinstance(arg, dict) or not isinstance(arg.get("model"), str) or set(arg) - {"model", "pass"}:
        raise ValueError("a judge metric is {judge: {model: POLICY, pass: '>=4'}}")
    match = _PASS.match(str(arg.get("pass", ">=4")))
    if match is None:
        raise ValueError(f"judge pass must look like '>=4', got {arg.get('pass')!r}")
    spec = JudgeSpec(arg["model"], match.group(1), float(match.group(2)))
    return Scorer(f"judge:{spec.model}", _pending, spec)


def normalise(text: Any) -> str:
    """Case, surrounding quotes and punctuation, and runs of white space do not count."""
    value = str(text).strip().strip("\"'`").strip()
    value = re.sub(r"\s+", " ", value.lower())
    return value.rstrip(".!;:")


def _json(text: str) -> Any:
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    return orjson.loads(stripped)


def _field(value: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _exact(output: str, expected: Any, item: dict[str, Any]) -> float:
    return float(normalise(output) == normalise(expected))


def _contains(output: str, expected: Any, item: dict[str, Any]) -> float:
    return float(normalise(expected) in normalise(output))


def _regex(pattern: str | None) -> ScoreFn:
    compiled = re.compile(pattern) if pattern is not None else None

    def score(output: str, expected: Any, item: dict[str, Any]) -> float:
        regex = compiled or re.compile(str(expected))
        return float(regex.search(output) is not None)

    return score


def _json_valid(schema: dict[str, Any] | None) -> ScoreFn:
    validator = jsonschema.Draft202012Validator(schema) if schema is not None else None

    def score(output: str, expected: Any, item: dict[str, Any]) -> float:
        try:
            value = _json(output)
        except orjson.JSONDecodeError:
            return 0.0
        return float(validator is None or validator.is_valid(value))

    return score


def _json_field(path: str) -> ScoreFn:
    def score(output: str, expected: Any, item: dict[str, Any]) -> float:
        try:
            got = _field(_json(output), path)
        except orjson.JSONDecodeError:
            return 0.0
        want = _field(expected, path) if isinstance(expected, dict) else expected
        return float(got == want or (isinstance(got, str) and normalise(got) == normalise(want)))

    return score


def _python(target: str) -> ScoreFn:
    module_name, _, function_name = target.partition(":")
    if not function_name:
        raise ValueError(f"a python scorer is 'module:function', got {target!r}")
    function = getattr(importlib.import_module(module_name), function_name)

    def score(output: str, expected: Any, item: dict[str, Any]) -> float:
        return float(function(output, expected, item))

    return score


def build_scorers(specs: list[str | dict[str, Any]], schema: dict[str, Any] | None) -> list[Scorer]:
    """Scorers from ``eval.metrics``. Raises ``ValueError`` for an unknown or malformed one."""
    plain: dict[str, ScoreFn] = {
        "exact_match": _exact,
        "contains": _contains,
        "regex": _regex(None),
        "json_valid": _json_valid(schema),
    }
    scorers = []
    for spec in specs:
        if isinstance(spec, str):
            if spec not in plain:
                raise ValueError(f"unknown metric {spec!r} (known: {', '.join(plain)}, json_field, python)")
            scorers.append(Scorer(spec, plain[spec]))
            continue
        if len(spec) != 1:
            raise ValueError(f"a parameterised metric has one key, got {sorted(spec)}")
        ((kind, arg),) = spec.items()
        if kind == "regex":
            scorers.append(Scorer("regex", _regex(str(arg))))
        elif kind == "json_field":
            scorers.append(Scorer(f"json_field:{arg}", _json_field(str(arg))))
        elif kind == "judge":
            scorers.append(_judge(arg))
        elif kind == "python":
            scorers.append(Scorer(f"python:{arg}", _python(str(arg))))
        else:
            raise ValueError(f"unknown metric {kind!r}")
    return scorers
