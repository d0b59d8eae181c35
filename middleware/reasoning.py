"""``prompt.reasoning``: chain-of-thought the client never sees.

The model is asked to reason first and then state its answer; the answer is cut out with the
policy's pattern and only it reaches the client. The reasoning stays on the call
(``call.notes[ReasoningLayer]``) for eval and, when a policy turns prompt logging on, the logs.
"""

from __future__ import annotations

import re
from typing import Self

from gateway.errors import OutputInvalid
from gateway.policy import PolicySpec, ReasoningSpec
from gateway.wire import ChatCompletion
from middleware.base import BuildContext, Call, PassThrough, system_message

__all__ = ["ReasoningLayer", "extract_answer"]


def extract_answer(pattern: re.Pattern[str], text: str) -> str | None:
    """The answer part of ``text``: the pattern's first group, else its whole match, else None."""
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    found = matches[-1]
    return (found.group(1) if pattern.groups else found.group(0)).strip()


class ReasoningLayer(PassThrough):
    stage = "render"
    needs_full_output = True

    def __init__(self, spec: ReasoningSpec) -> None:
        self.spec = spec
        self.pattern = re.compile(spec.answer_pattern)

    @classmethod
    def build(cls, spec: PolicySpec, context: BuildContext) -> Self | None:
        if spec.prompt is None or spec.prompt.reasoning is None:
            return None
        return cls(spec.prompt.reasoning)

    async def prepare(self, call: Call) -> None:
        system = system_message(call)
        instruction = self.spec.instruction
        system.content = f"{system.content}\n\n{instruction}" if system.content else instruction
        call.observer.injected(len(instruction))

    async def complete(self, call: Call, reply: ChatCompletion) -> ChatCompletion:
        reasoning: list[str] = []
        for choice in reply.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                continue
            text: str = message["content"]
            reasoning.append(text)
            answer = extract_answer(self.pattern, text)
            if answer is None and self.spec.on_no_answer == "error":
                raise OutputInvalid("The model's reply did not contain an answer the policy's pattern finds.")
            if answer is not None:
                message["content"] = answer
        call.notes[ReasoningLayer] = reasoning
        return reply
