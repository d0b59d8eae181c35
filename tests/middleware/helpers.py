"""Build a policy's pipeline from a dict and run its ``prepare`` with no network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from gateway.config.files import PolicyFiles
from gateway.engine.pipeline import LAYER_TYPES, Pipeline
from gateway.policy import PolicySpec
from gateway.wire import ChatRequest, dump_body
from middleware.base import BuildContext, Call, Layer, QuietObserver, StoreUse


def pipeline(policy: dict[str, Any], folder: Path | None = None, *, supports_json_schema: bool = True) -> Pipeline:
    spec = PolicySpec.model_validate(policy)
    folder = folder or Path.cwd()
    context = BuildContext("bot", folder, PolicyFiles(folder, [folder], folder), supports_json_schema)
    layers: list[Layer] = []
    for layer_type in LAYER_TYPES:
        layer = layer_type.build(spec, context)
        if layer is not None:
            layers.append(layer)
    return Pipeline(tuple(layers))


class Recorder(QuietObserver):
    """Keeps what a call's layers reported, for the test to assert on."""

    __slots__ = ("chars", "hits", "searches", "stages", "validations")

    def __init__(self) -> None:
        self.chars = 0
        self.validations: list[str] = []
        self.hits: list[int] = []
        self.searches: list[StoreUse] = []
        self.stages: list[str] = []

    def injected(self, chars: int) -> None:
        self.chars += chars

    def validated(self, result: str) -> None:
        self.validations.append(result)

    def retrieved(self, hits: int) -> None:
        self.hits.append(hits)

    def searched(self, use: StoreUse) -> None:
        self.searches.append(use)

    def stage(self, stage: str, seconds: float) -> None:
        self.stages.append(stage)


def call_for(messages: list[dict[str, Any]], **fields: Any) -> Call:
    body = ChatRequest.model_validate({"model": "bot", "messages": messages, **fields})
    return Call("req-1", body, policy="bot", variant="default", stream=bool(fields.get("stream")), observer=Recorder())


def report_of(call: Call) -> Recorder:
    """What the layers of ``call`` (made by ``call_for``) reported."""
    assert isinstance(call.observer, Recorder)
    return call.observer


async def prepared(policy: dict[str, Any], messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    call = call_for(messages, **fields)
    await pipeline(policy).prepare(call)
    result: dict[str, Any] = orjson.loads(dump_body(call.body))
    return result
