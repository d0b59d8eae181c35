"""``few_shot:``: labelled examples injected as user/assistant turns after the system prompt.

Examples are read, checked and turned into messages once at load; a request only splices them in.
"""

from __future__ import annotations

from typing import Any, Self

import orjson
from pydantic import ValidationError

from gateway.policy import ExampleSpec, PolicySpec
from gateway.wire import ChatMessage
from middleware.base import BuildContext, Call, LayerError, PassThrough

__all__ = ["FewShotLayer", "example_messages", "load_examples"]

_LEADING_ROLES = frozenset({"system", "developer"})


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

    def __init__(self, turns: list[ChatMessage], chars: int) -> None:
        self.turns = tuple(turns)
        self.chars = chars

    @classmethod
    def build(cls, spec: PolicySpec, context: BuildContext) -> Self | None:
        if spec.few_shot is None:
            return None
        examples = load_examples(spec.few_shot.examples, context)
        if spec.few_shot.max_examples is not None:
            examples = examples[: spec.few_shot.max_examples]
        if not examples:
            return None
        try:
            turns = [turn for example in examples for turn in example_messages(example)]
        except ValidationError as exc:
            raise LayerError(("few_shot", "examples"), f"an example's messages are invalid: {exc}") from None
        chars = sum(len(t.content) for t in turns if isinstance(t.content, str))
        return cls(turns, chars)

    async def prepare(self, call: Call) -> None:
        messages = call.body.messages
        at = 0
        while at < len(messages) and messages[at].role in _LEADING_ROLES:
            at += 1
        messages[at:at] = self.turns
        call.injected_chars += self.chars
