"""What a request becomes before it leaves: the final upstream body, for ``/v1/render`` and ``prefit render``.

Rendering runs the very ``prepare`` steps serving runs, so what is shown is what would be sent. A
chain shows every step's request; outputs of earlier steps, unknown without calling upstream,
appear as ``<output of step NAME>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.config.load import LoadedPolicy, LoadedVariant
from gateway.engine.chain import Chain, Placeholder, StepOutput
from gateway.engine.pipeline import ask_for_usage
from gateway.wire import ChatRequest, dump_body
from middleware.base import Call
from middleware.few_shot import InjectedExamples
from middleware.retrieval import RetrievedContext

__all__ = ["render_request"]


async def _render_chain(
    chain: Chain,
    variant: LoadedVariant,
    chat: ChatRequest,
    request_id: str,
    policies: Mapping[str, LoadedPolicy],
    sticky: str | None,
) -> list[dict[str, Any]]:
    placeholders = {
        step.name: StepOutput(f"<output of step {step.name}>", Placeholder(f"<json of step {step.name}>"))
        for step in chain.steps
    }
    rendered = []
    for step in chain.steps:
        body = chain.step_body(step, chat, placeholders)
        if step.model is None:
            call = Call(request_id=request_id, body=body, upstream=variant.upstream)
            assert step.pipeline is not None
            await step.pipeline.prepare(call)
            entry = {
                "policy": None,
                "variant": None,
                "upstream": variant.upstream,
                "body": orjson.loads(dump_body(step.pipeline.upstream_body(call))),
            }
        else:
            callee = policies[step.model]
            entry = await render_request(
                callee, callee.choose(sticky), body, request_id, variant.upstream, policies, sticky
            )
        rendered.append({"step": step.name, "model": step.model, **entry})
    return rendered


async def render_request(
    policy: LoadedPolicy | None,
    variant: LoadedVariant | None,
    chat: ChatRequest,
    request_id: str,
    upstream: str,
    policies: Mapping[str, LoadedPolicy] | None = None,
    sticky: str | None = None,
) -> dict[str, Any]:
    """The upstream body for ``chat`` and what chose it; nothing is sent. Raises ``PrefitError``."""
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
        steps = await _render_chain(variant.chain, variant, chat, request_id, policies or {}, sticky)
        result["steps"] = steps
        result["body"] = steps[-1]["body"]
        return result
    call = Call(request_id=request_id, body=chat, stream=bool(chat.stream), upstream=upstream)
    call.policy, call.variant, call.prompt_version = policy.name, variant.name, variant.prompt_version
    await variant.pipeline.prepare(call)
    body = variant.pipeline.upstream_body(call)
    if body.stream:
        body, _ = ask_for_usage(body)
    result["body"] = orjson.loads(dump_body(body))
    if RetrievedContext in call.notes:
        result["context"] = list(call.notes[RetrievedContext])
    if InjectedExamples in call.notes:
        result["examples"] = list(call.notes[InjectedExamples])
    return result
