"""``few_shot:``: labelled examples injected as user/assistant turns after the system prompt.

Static examples are read, checked and turned into messages once at load; a request only splices
them in. With ``dynamic``, the examples most similar to the request come from a collection
instead, without duplicates, and never one whose input is in the policy's own eval dataset (that
would leak the answers into the measurement); the static examples fill in when none is found or
the store fails. A store failure is never silent: the reply says ``x-prefit-context: error`` and
the failure goes to ``call.observer`` for the log, the metrics and ``/readyz``.
"""

from __future__ import annotations

import re
from typing import Any, Self

import orjson
from pydantic import ValidationError

from gateway.policy import DynamicFewShotSpec, ExampleSpec, PolicySpec
from gateway.wire import ChatMessage
from middleware.base import (
    BuildContext,
    Call,
    LayerError,
    Passage,
    PassThrough,
    ResourceError,
    Resources,
    StoreUse,
)
from middleware.query import query_text, query_vector
from middleware.retrieval import CONTEXT_HEADER

__all__ = ["FewShotLayer", "InjectedExamples", "example_messages", "load_examples", "normalised"]

_LEADING_ROLES = frozenset({"system", "developer"})


def normalised(text: object) -> str:
    """Case and white space do not make two example inputs different."""
    return re.sub(r"\s+", " ", str(text)).strip().lower()


class InjectedExamples(list[str]):
    """Ids of the retrieved examples a request got (in ``call.notes``), for render and eval."""


def _eval_inputs(spec: PolicySpec, context: BuildContext) -> frozenset[str]:
    """Normalised inputs of the policy's eval dataset: examples never to inject."""
    if spec.eval is None:
        return frozenset()
    source = context.files.read(("eval", "dataset"), spec.eval.dataset)
    inputs = set()
    for line in source.text.splitlines():
        try:
            record = orjson.loads(line) if line.strip() else None
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("input"), str):
            inputs.add(normalised(record["input"]))
    return frozenset(inputs)


def _as_text(output: str | dict[str, Any] | list[Any]) -> str:
    return output if isinstance(output, str) else orjson.dumps(output).decode()


def example_messages(example: ExampleSpec) -> list[ChatMessage]:
    """One example as the turns the model sees: the input's message(s), then the answer."""
    if isinstance(example.input, str):
        turns = [ChatMessage(role="user", content=example.input)]
    else:
        turns = [ChatMessage.model_validate(message) for message in example.input]
    return [*turns, ChatMessage(role="assistant", content=_as_text(example.output))]


def load_examples(value: str | list[ExampleSpec], context: BuildContext) -> list[ExampleSpec]:
    """Inline examples as they are, or a ``file:`` JSONL read line by line. Raises ``LayerError``."""
    if not isinstance(value, str):
        return list(value)
    field = ("few_shot", "examples")
    source = context.files.read(field, value)
    examples: list[ExampleSpec] = []
    for number, line in enumerate(source.text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            examples.append(ExampleSpec.model_validate(orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            raise LayerError(field, f"not JSON: {exc}", file=source.origin, line=number) from None
        except ValidationError as exc:
            error = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in error["loc"])
            raise LayerError(field, f"{where}: {error['msg']}", file=source.origin, line=number) from None
    return examples


class FewShotLayer(PassThrough):
    stage = "render"

    def __init__(
        self,
        turns: list[ChatMessage],
        chars: int,
        dynamic: DynamicFewShotSpec | None = None,
        resources: Resources | None = None,
        excluded: frozenset[str] = frozenset(),
    ) -> None:
        self.turns = tuple(turns)
        self.chars = chars
        self.dynamic = dynamic
        self.resources = resources
        self.excluded = excluded

    @classmethod
    def build(cls, spec: PolicySpec, context: BuildContext) -> Self | None:
        if spec.few_shot is None:
            return None
        examples = load_examples(spec.few_shot.examples, context)
        if spec.few_shot.max_examples is not None:
            examples = examples[: spec.few_shot.max_examples]
        dynamic = spec.few_shot.dynamic
        if not examples and dynamic is None:
            return None
        try:
            turns = [turn for example in examples for turn in example_messages(example)]
        except ValidationError as exc:
            raise LayerError(("few_shot", "examples"), f"an example's messages are invalid: {exc}") from None
        chars = sum(len(t.content) for t in turns if isinstance(t.content, str))
        if dynamic is None:
            return cls(turns, chars)
        if context.resources is None:
            raise LayerError(("few_shot", "dynamic"), "dynamic examples need the embedder and vector store")
        excluded = _eval_inputs(spec, context) | {normalised(e.input) for e in examples if isinstance(e.input, str)}
        return cls(turns, chars, dynamic, context.resources, excluded)

    async def _retrieved(self, call: Call) -> list[Passage]:
        assert self.dynamic is not None and self.resources is not None
        text = query_text(call)
        if not text:
            return []
        try:
            vector = await query_vector(call, self.resources, text)
            with call.timer("retrieve"):
                found = await self.resources.search(
                    self.dynamic.collection,
                    vector,
                    self.dynamic.k * 3,
                    self.dynamic.min_score,
                    None,
                )
        except ResourceError as exc:
            call.observer.searched(StoreUse.failed("few_shot", self.dynamic.collection, exc))
            call.response_headers[CONTEXT_HEADER] = "error"
            return []  # the static examples stand in
        call.observer.searched(StoreUse("few_shot", self.dynamic.collection))
        chosen: list[Passage] = []
        seen: set[str] = set()
        for passage in found:
            key = normalised(passage.payload.get("input", ""))
            usable = passage.payload.get("kind") == "example" and "output" in passage.payload
            if usable and key and key not in seen and key not in self.excluded:
                seen.add(key)
                chosen.append(passage)
            if len(chosen) == self.dynamic.k:
                break
        return chosen

    async def prepare(self, call: Call) -> None:
        turns, chars = self.turns, self.chars
        if self.dynamic is not None:
            retrieved = await self._retrieved(call)
            if retrieved:
                call.notes[InjectedExamples] = InjectedExamples(p.id for p in retrieved)
                pairs = [ExampleSpec(input=str(p.payload["input"]), output=p.payload["output"]) for p in retrieved]
                turns = tuple(turn for pair in reversed(pairs) for turn in example_messages(pair))
                chars = sum(len(t.content) for t in turns if isinstance(t.content, str))
        if not turns:
            return
        messages = call.body.messages
        at = 0
        while at < len(messages) and messages[at].role in _LEADING_ROLES:
            at += 1
        messages[at:at] = turns
        call.observer.injected(chars)
