"""The judge scorer: another policy grades each answer with a number, for answers no regex can check.

The judge is an ordinary policy (versioned, with its own prompt and examples), called through the
same in-process gateway and on-disk call cache as the items themselves. It gets one user message
laying out the item's ``input``, ``expected`` and ``output``, and the same three as request
``metadata``, which its system prompt can use as ``{{ metadata.output }}`` once it whitelists them
(``prompt.metadata: [input, expected, output]``; like any metadata value, capped at 512
characters, where the message carries them whole). Its answer must start with a number; any other
answer marks the item ``error`` with the judge's raw words, and the run goes on.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson

from gateway.eval.runner import EvalItem, ItemResult, Runner
from gateway.eval.scoring import Scorer

__all__ = ["judge_message", "parse_grade", "run_judges"]

_MAX_METADATA = 512  # OpenAI's limit on a metadata value
_NUMBER = re.compile(r"^\W*?(-?[0-9]+(?:\.[0-9]+)?)\b")


def _show(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def judge_message(item: EvalItem, output: str) -> str:
    return f"Input:\n{item.text()}\n\nExpected:\n{_show(item.expected)}\n\nOutput:\n{output}"


def parse_grade(answer: str) -> float | None:
    """The number an answer starts with (``4``, ``4.5``, ``**4**/5``); None when it has none."""
    match = _NUMBER.match(answer.strip())
    return float(match.group(1)) if match else None


async def _grade(runner: Runner, scorer: Scorer, result: ItemResult, use_cache: bool) -> None:
    assert scorer.judge is not None
    item = result.item
    shown = {"input": item.text(), "expected": _show(item.expected), "output": result.output}
    metadata = {key: value[:_MAX_METADATA] for key, value in shown.items()}
    request = EvalItem(item.id, judge_message(item, result.output), None, metadata)
    verdict = await runner.run_item(request, runner.policy.primary.name, result.repeat, use_cache)
    if verdict.error is not None:
        result.error = f"judge {scorer.judge.model}: {verdict.error}"
        return
    grade = parse_grade(verdict.output)
    result.judge = {"model": scorer.judge.model, "grade": grade, "answer": verdict.output}
    if grade is None:
        result.error = f"judge {scorer.judge.model} answered {verdict.output.strip()[:200]!r}, not a number"
        result.scores[scorer.name] = 0.0
        return
    result.scores[scorer.name] = 1.0 if scorer.judge.passes(grade) else 0.0


async def run_judges(runners: dict[str, Runner], scorers: list[Scorer], results: list[ItemResult], cache: bool) -> None:
    """Grade every answered item with every judge scorer, in place (``runners`` by judge policy)."""
    jobs = [
        _grade(runners[scorer.judge.model], scorer, result, cache)
        for scorer in scorers
        if scorer.judge is not None
        for result in results
        if result.error is None
    ]
    await asyncio.gather(*jobs)
