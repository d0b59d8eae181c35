"""What a request becomes before it leaves: the final upstream body, for ``/v1/render`` and ``prefit render``.

Rendering runs the very ``prepare`` steps serving runs, so what is shown is what would be sent. A
chain shows every step's request; outputs of earlier steps, unknown without calling upstream,
appear as ``<output of step NAME>``, a ``for_each`` step's element as ``<each item of ...>``, and
a routing step shows what each of its cases would send.

Render is for looking at what a policy does, so it hides nothing: a vector-store search that could
not run fails the render with its cause (502 ``retrieval_failed``), even for a policy whose
``on_error: skip`` would answer without context, instead of showing a body without its sources.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from gateway.config.load import LoadedPolicy, LoadedVariant
from gateway.engine.chain import Chain, ChainStep, Placeholder, StepOutput
from gateway.engine.pipeline import Pipeline, ask_for_usage
from gateway.serving.resolve import step_target
from gateway.wire import ChatRequest, dump_body
from middleware.base import Call, QuietObserver, StoreUse
from middleware.few_shot import InjectedExamples
from middleware.retrieval import RetrievalFailed, RetrievedContext

__all__ = ["OnSearch", "render_request"]

#: Told about each vector-store search a render made (policy, search), e.g. to log and count failures.
OnSearch = Callable[[str, StoreUse], None]


def _ignore(policy: str, use: StoreUse) -> None:
    return None


class _RenderReport(QuietObserver):
    """Hears a rendered call's searches: passes them on, and keeps the first that could not run."""

    __slots__ = ("failed", "on_search", "policy")

    def __init__(self, policy: str, on_search: OnSearch) -> None:
        self.policy = policy
        self.on_search = on_search
        self.failed: StoreUse | None = None

    def searched(self, use: StoreUse) -> None:
        self.on_search(self.policy, use)
        if use.reason is not None and self.failed is None:
            self.failed = use


async def _prepare(pipeline: Pipeline, call: Call, on_search: OnSearch) -> None:
    """Run the layers; raises ``RetrievalFailed`` naming the cause when a search could not run."""
    report = _RenderReport(call.policy, on_search)
    call.observer = report
    await pipeline.prepare(call)
    use = report.failed
    if use is not None:
        what = "Retrieval" if use.layer == "retrieval" else "Dynamic few-shot retrieval"
        raise RetrievalFailed(
            f"{what} from {use.collection!r} failed ({use.reason}), so the rendered request would lack "
            f"its context: {use.message}"
        )


async def _render_chain(
    chain: Chain,
    policy: LoadedPolicy,
    variant: LoadedVariant,
    chat: ChatRequest,
    request_id: str,
    policies: Mapping[str, LoadedPolicy],
    sticky: str | None,
    on_search: OnSearch,
) -> list[dict[str, Any]]:
    placeholders = {
        step.name: StepOutput(
            f"<output of step {step.name}>",
            Placeholder(f"<json of step {step.name}>"),
            f"<policy routed by step {step.name}>" if step.route is not None else None,
        )
        for step in chain.steps
    }

    async def one(step: ChainStep) -> dict[str, Any]:
        item = Placeholder(f"<each item of {step.for_each_source}>") if step.for_each is not None else None
        body = chain.step_body(step, chat, placeholders, item)
        target = step_target(step, policy, variant, policies, sticky)
        if step.model is None:
            call = Call(request_id=request_id, body=body, policy=policy.name, upstream=target.upstream)
            await _prepare(target.pipeline, call, on_search)
            return {
                "policy": None,
                "variant": None,
                "upstream": target.upstream,
                "body": orjson.loads(dump_body(target.pipeline.upstream_body(call))),
            }
        return await render_request(
            target.policy, target.variant, body, request_id, target.upstream, policies, sticky, on_search
        )

    rendered = []
    for step in chain.steps:
        if step.route is not None:
            entry = await _render_route(step, chain, chat, placeholders, one)
        else:
            entry = {"model": step.model, **await one(step)}
            if step.for_each is not None:
                entry["for_each"] = {"over": step.for_each_source, "concurrency": step.concurrency}
        rendered.append({"step": step.name, **entry})
    return rendered


async def _render_route(
    step: ChainStep,
    chain: Chain,
    chat: ChatRequest,
    placeholders: Mapping[str, StepOutput],
    one: Callable[[ChainStep], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """A routing step: its value (a placeholder while earlier outputs are unknown) and what each case would send."""
    assert step.route is not None
    route = step.route
    cases = {
        value: await one(dataclasses.replace(step, model=model, route=None)) for value, model in route.cases.items()
    }
    default = await one(dataclasses.replace(step, model=route.default, route=None)) if route.default else None
    shown = default if default is not None else next(iter(cases.values()))
    return {
        "model": None,
        "route": {
            "on": chain.route_value(step, chat, placeholders),
            "cases": {value: {"model": model, **cases[value]} for value, model in route.cases.items()},
            "default": {"model": route.default, **default} if default is not None else None,
        },
        "body": shown["body"],
    }


async def render_request(
    policy: LoadedPolicy | None,
    variant: LoadedVariant | None,
    chat: ChatRequest,
    request_id: str,
    upstream: str,
    policies: Mapping[str, LoadedPolicy] | None = None,
    sticky: str | None = None,
    on_search: OnSearch = _ignore,
) -> dict[str, Any]:
    """The upstream body for ``chat`` and what chose it; nothing is sent. Raises ``PrefitError``
    (``RetrievalFailed`` when a vector-store search could not run)."""
    if policy is None or variant is None:
        body = ask_for_usage(chat)[0] if chat.stream else chat
        return {
            "policy": "passthrough",
            "variant": None,
            "prompt_version": None,
            "prompt_hash": None,
            "upstream": upstream,
            "body": orjson.loads(dump_body(body)),
        }
    result: dict[str, Any] = {
        "policy": policy.name,
        "variant": variant.name,
        "prompt_version": variant.prompt_version,
        "prompt_hash": variant.prompt_hash or None,
        "upstream": variant.upstream,
    }
    if variant.chain is not None:
        steps = await _render_chain(variant.chain, policy, variant, chat, request_id, policies or {}, sticky, on_search)
        result["steps"] = steps
        result["body"] = steps[-1]["body"]
        return result
    call = Call(request_id=request_id, body=chat, stream=bool(chat.stream), upstream=upstream)
    call.policy, call.variant, call.prompt_version = policy.name, variant.name, variant.prompt_version
    await _prepare(variant.pipeline, call, on_search)
    body = variant.pipeline.upstream_body(call)
    if body.stream:
        body, _ = ask_for_usage(body)
    result["body"] = orjson.loads(dump_body(body))
    if RetrievedContext in call.notes:
        result["context"] = list(call.notes[RetrievedContext])
    if InjectedExamples in call.notes:
        result["examples"] = list(call.notes[InjectedExamples])
    return result
