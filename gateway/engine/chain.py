"""Decomposition: a chain of small steps answered as one model name.

Each step is another policy (with its own prompt, examples, validation, variants), a policy
picked per request by a ``route``, or an inline prompt, fed by a template over the request and
earlier steps' outputs. A ``for_each`` step runs once per element of a list. Steps that do not
read each other run at once; the last step runs after all others, and only it may stream.
Serving supplies how a step reaches an upstream (``StepRunner``), so a chain uses the same cache,
retries and metrics as any request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import orjson

from gateway.engine.pipeline import Pipeline, without_streaming
from gateway.errors import OutputInvalid, PrefitError, RouteUnmatched, StepFailed
from gateway.wire import ChatMessage, ChatRequest

__all__ = [
    "Chain",
    "ChainStep",
    "Placeholder",
    "StepOutput",
    "StepRoute",
    "StepRunner",
    "last_user_text",
    "reply_text",
]

#: What a shown ``for_each`` value may be cut to in an error.
_SHOWN_CHARS = 200


@dataclass(frozen=True, slots=True)
class StepOutput:
    """What later steps see of an earlier one: ``output`` text, ``json`` if it parses, and the
    policy a routing step picked (``routed``)."""

    output: str
    json: Any = None
    routed: str | None = None


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
class StepRoute:
    """A routing step's choice: the rendered ``on`` value looked up in ``cases``, else ``default``."""

    on: jinja2.Template
    cases: Mapping[str, str]
    default: str | None

    def pick(self, value: str) -> str:
        """The policy for ``value``. Raises ``RouteUnmatched`` showing the value and the cases."""
        chosen = self.cases.get(value, self.default)
        if chosen is None:
            known = ", ".join(repr(case) for case in self.cases)
            raise RouteUnmatched(
                f"route value {value[:_SHOWN_CHARS]!r} matches no case ({known}) and there is no default"
            )
        return chosen


@dataclass(frozen=True, slots=True)
class ChainStep:
    """One compiled step; ``needs`` are the steps its templates read (it starts once they are done)."""

    name: str
    model: str | None
    template: jinja2.Template | None
    pipeline: Pipeline | None = None
    for_each: Callable[..., Any] | None = None
    concurrency: int = 4
    route: StepRoute | None = None
    needs: frozenset[str] = frozenset()
    for_each_source: str = ""


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


def _shown(value: Any) -> str:
    """A short description of a value that is not a list, for a ``for_each`` error."""
    if isinstance(value, jinja2.Undefined):
        return "nothing (the name is undefined)"
    text = orjson.dumps(value, default=str).decode()
    cut = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."
    return f"{type(value).__name__} {cut}"


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

    def _context(self, original: ChatRequest, outputs: Mapping[str, StepOutput], item: Any) -> dict[str, Any]:
        context = {
            "input": last_user_text(original.messages),
            "steps": dict(outputs),
            "metadata": self._metadata(original),
        }
        if item is not None:
            context["item"] = item
        return context

    def step_body(
        self, step: ChainStep, original: ChatRequest, outputs: Mapping[str, StepOutput], item: Any = None
    ) -> ChatRequest:
        """The request a step sends: the original conversation, or its rendered input as one user turn."""
        model = step.model or original.model
        if step.template is None:
            body = original.model_copy(update={"model": model, "messages": [m.model_copy() for m in original.messages]})
        else:
            try:
                text = step.template.render(self._context(original, outputs, item))
            except jinja2.TemplateError as exc:
                raise OutputInvalid(
                    f"step '{step.name}': its input could not be rendered from earlier outputs: {exc}"
                ) from None
            body = original.model_copy(update={"model": model, "messages": [ChatMessage(role="user", content=text)]})
        return without_streaming(body)

    def route_value(self, step: ChainStep, original: ChatRequest, outputs: Mapping[str, StepOutput]) -> str:
        """A routing step's rendered ``on`` value, trimmed."""
        assert step.route is not None
        try:
            return step.route.on.render(self._context(original, outputs, None)).strip()
        except jinja2.TemplateError as exc:
            raise OutputInvalid(f"step '{step.name}': its route value could not be rendered: {exc}") from None

    def elements(self, step: ChainStep, original: ChatRequest, outputs: Mapping[str, StepOutput]) -> Any:
        """The value a ``for_each`` step maps over (a list, or anything else when it is wrong)."""
        assert step.for_each is not None
        try:
            return step.for_each(**self._context(original, outputs, None))
        except jinja2.TemplateError as exc:
            raise OutputInvalid(f"step '{step.name}': its for_each list could not be read: {exc}") from None

    async def run(
        self,
        original: ChatRequest,
        stream: bool,
        runner: StepRunner,
        observe: Callable[[str, float], None],
        outputs: dict[str, StepOutput] | None = None,
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """Run every step; the last one's answer is the chain's (chunks when ``stream``). Raises
        ``StepFailed``. ``outputs``, when given, receives every step's output as it finishes."""
        outputs = {} if outputs is None else outputs
        *early, last = self.steps
        await self._run_early(early, original, runner, observe, outputs)
        started = time.perf_counter()
        try:
            return await self._run_last(last, original, stream, runner, outputs)
        except PrefitError as exc:
            raise StepFailed(last.name, exc) from exc
        finally:
            observe(last.name, time.perf_counter() - started)

    async def _run_early(
        self,
        early: list[ChainStep],
        original: ChatRequest,
        runner: StepRunner,
        observe: Callable[[str, float], None],
        outputs: dict[str, StepOutput],
    ) -> None:
        """Start each step once the steps it reads are done; the first failure cancels the rest."""
        waiting = {step.name: step for step in early}
        running: dict[asyncio.Task[StepOutput], str] = {}
        try:
            while waiting or running:
                for name, step in list(waiting.items()):
                    if step.needs <= outputs.keys():
                        del waiting[name]
                        running[asyncio.create_task(self._timed(step, original, runner, observe, outputs))] = name
                if not running:
                    raise AssertionError(f"steps wait on each other: {', '.join(waiting)}")
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    outputs[running.pop(task)] = task.result()
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _timed(
        self,
        step: ChainStep,
        original: ChatRequest,
        runner: StepRunner,
        observe: Callable[[str, float], None],
        outputs: Mapping[str, StepOutput],
    ) -> StepOutput:
        started = time.perf_counter()
        try:
            return await self._run_step(step, original, runner, outputs)
        except StepFailed:
            raise
        except PrefitError as exc:
            raise StepFailed(step.name, exc) from exc
        finally:
            observe(step.name, time.perf_counter() - started)

    async def _run_step(
        self, step: ChainStep, original: ChatRequest, runner: StepRunner, outputs: Mapping[str, StepOutput]
    ) -> StepOutput:
        if step.for_each is not None:
            return await self._run_each(step, original, runner, outputs)
        routed = None
        if step.route is not None:
            routed = step.route.pick(self.route_value(step, original, outputs))
            step = dataclasses.replace(step, model=routed, route=None)
        result = await runner(step, self.step_body(step, original, outputs), False)
        assert isinstance(result, dict)
        text = reply_text(result)
        return StepOutput(text, _parsed(text), routed)

    async def _run_each(
        self, step: ChainStep, original: ChatRequest, runner: StepRunner, outputs: Mapping[str, StepOutput]
    ) -> StepOutput:
        """One call per element, at most ``concurrency`` at once; results keep the elements' order."""
        elements = self.elements(step, original, outputs)
        if not isinstance(elements, list):
            raise OutputInvalid(f"for_each needs a list, got {_shown(elements)}")
        limit = asyncio.Semaphore(step.concurrency)

        async def one(index: int, element: Any) -> str:
            body = self.step_body(step, original, outputs, element)
            async with limit:
                try:
                    result = await runner(step, body, False)
                except PrefitError as exc:
                    raise StepFailed(f"{step.name}[{index}]", exc) from exc
            assert isinstance(result, dict)
            return reply_text(result)

        texts = await _gather(one(index, element) for index, element in enumerate(elements))
        results = [parsed if (parsed := _parsed(text)) is not None else text for text in texts]
        return StepOutput("\n".join(texts), results)

    async def _run_last(
        self, step: ChainStep, original: ChatRequest, stream: bool, runner: StepRunner, outputs: dict[str, StepOutput]
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        routed = None
        if step.route is not None:
            routed = step.route.pick(self.route_value(step, original, outputs))
            step = dataclasses.replace(step, model=routed, route=None)
        body = self.step_body(step, original, outputs)
        if stream:
            body.stream = True
            if original.stream_options is not None:
                body.stream_options = original.stream_options
        result = await runner(step, body, stream)
        if isinstance(result, dict):
            text = reply_text(result)
            outputs[step.name] = StepOutput(text, _parsed(text), routed)
        elif routed is not None:
            outputs[step.name] = StepOutput("", None, routed)
        return result


async def _gather(calls: Iterable[Coroutine[Any, Any, str]]) -> list[str]:
    """All calls at once (each bounded by the step's semaphore); the first failure cancels the others."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
