"""Decomposition: a chain of small steps answered as one model name.

Each step is another policy (with its own prompt, examples, validation, variants) or an inline
prompt, fed by a template over the request and earlier steps' outputs. Steps run in order; only
the last may stream. Routing supplies how a step reaches an upstream (``StepRunner``), so a chain
uses the same cache, retries and metrics as any request.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import orjson

from gateway.engine.pipeline import Pipeline, without_streaming
from gateway.errors import OutputInvalid, PrefitError, StepFailed
from gateway.wire import ChatMessage, ChatRequest
from middleware.base import LayerError
from middleware.prompt import compile_template

__all__ = [
    "Chain",
    "ChainStep",
    "Placeholder",
    "StepOutput",
    "StepRunner",
    "last_user_text",
    "reply_text",
]

_TEMPLATE_NAMES = {"input", "steps", "metadata"}


@dataclass(frozen=True, slots=True)
class StepOutput:
    """What later steps see of an earlier one: ``output`` text and, if it parses, ``json``."""

    output: str
    json: Any = None


class Placeholder:
    """Stands for an output not known yet (rendering without calling upstream); any field of it is one too."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __str__(self) -> str:
        return self._text

    def __getattr__(self, name: str) -> Placeholder:
        if name.startswith("_"):
            raise AttributeError(name)
        return Placeholder(f"{self._text[:-1]}.{name}>")

    def __getitem__(self, key: object) -> Placeholder:
        return Placeholder(f"{self._text[:-1]}[{key!r}]>")


@dataclass(frozen=True, slots=True)
class ChainStep:
    name: str
    model: str | None
    template: jinja2.Template | None
    pipeline: Pipeline | None = None


#: Runs one step: (step, body, stream) -> a whole reply, or chunks when ``stream``.
StepRunner = Callable[[ChainStep, ChatRequest, bool], Awaitable[dict[str, Any] | AsyncIterator[dict[str, Any]]]]


def reply_text(reply: Mapping[str, Any]) -> str:
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


def last_user_text(messages: list[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            if isinstance(message.content, str):
                return message.content
            parts = [p.get("text", "") for p in message.content or [] if isinstance(p, dict)]
            return " ".join(str(part) for part in parts)
    return ""


def _parsed(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def compile_step_input(source: str | None, index: int) -> jinja2.Template | None:
    """Compile a step's input template. Raises ``LayerError`` naming ``steps[index].input``."""
    if source is None:
        return None
    template, _ = compile_template(source, ("steps", index, "input"), _TEMPLATE_NAMES)
    return template


@dataclass(slots=True)
class _Run:
    outputs: dict[str, StepOutput] = field(default_factory=dict)


class Chain:
    """The compiled steps of one chain policy; shared by all its requests."""

    def __init__(self, policy: str, steps: tuple[ChainStep, ...], metadata_keys: tuple[str, ...] = ()) -> None:
        self.policy = policy
        self.steps = steps
        self.metadata_keys = metadata_keys

    def _metadata(self, original: ChatRequest) -> dict[str, str]:
        """Only the whitelisted request metadata (the chain policy's ``prompt.metadata``), capped."""
        given = original.metadata or {}
        return {k: v[:512] if isinstance(v, str) else "" for k in self.metadata_keys for v in [given.get(k)]}

    def step_body(self, step: ChainStep, original: ChatRequest, outputs: Mapping[str, StepOutput]) -> ChatRequest:
        """The request a step sends: the original conversation, or its rendered input as one user turn."""
        model = step.model or original.model
        if step.template is None:
            body = original.model_copy(update={"model": model, "messages": [m.model_copy() for m in original.messages]})
        else:
            try:
                text = step.template.render(
                    input=last_user_text(original.messages), steps=dict(outputs), metadata=self._metadata(original)
                )
            except jinja2.TemplateError as exc:
                raise OutputInvalid(
                    f"step '{step.name}': its input could not be rendered from earlier outputs: {exc}"
                ) from None
            body = original.model_copy(update={"model": model, "messages": [ChatMessage(role="user", content=text)]})
        return without_streaming(body)

    async def run(
        self, original: ChatRequest, stream: bool, runner: StepRunner, observe: Callable[[str, float], None]
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """Run every step; the last one's answer is the chain's (chunks when ``stream``). Raises ``StepFailed``."""
        outputs: dict[str, StepOutput] = {}
        last = len(self.steps) - 1
        for index, step in enumerate(self.steps):
            body = self.step_body(step, original, outputs)
            streaming = stream and index == last
            if streaming:
                body.stream = True
                if original.stream_options is not None:
                    body.stream_options = original.stream_options
            started = time.perf_counter()
            try:
                result = await runner(step, body, streaming)
            except PrefitError as exc:
                raise StepFailed(step.name, exc) from exc
            finally:
                observe(step.name, time.perf_counter() - started)
            if streaming or index == last:
                return result
            assert isinstance(result, dict)
            text = reply_text(result)
            outputs[step.name] = StepOutput(text, _parsed(text))
        raise AssertionError("a chain has at least one step")


def build_inline_steps(
    policy: str, specs: list[Any], inline_pipeline: Callable[[int, str], Pipeline]
) -> tuple[ChainStep, ...]:
    """Compile each step's template; inline prompts get a pipeline from ``inline_pipeline``. Raises ``LayerError``."""
    steps = []
    for index, spec in enumerate(specs):
        template = compile_step_input(spec.input, index)
        pipeline = inline_pipeline(index, spec.system) if spec.system is not None else None
        steps.append(ChainStep(spec.name, spec.model, template, pipeline))
    if not steps:
        raise LayerError(("steps",), "a chain needs at least one step")
    return tuple(steps)
