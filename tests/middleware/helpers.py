"""Build a policy's pipeline from a dict and run its ``prepare`` with no network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from gateway.config.files import PolicyFiles
from gateway.engine.pipeline import LAYER_TYPES, Pipeline
from gateway.policy import PolicySpec
from gateway.wire import ChatRequest, dump_body
from middleware.base import BuildContext, Call, Layer


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


def call_for(messages: list[dict[str, Any]], **fields: Any) -> Call:
    body = ChatRequest.model_validate({"model": "bot", "messages": messages, **fields})
    return Call("req-1", body, policy="bot", variant="default", stream=bool(fields.get("stream")))


async def prepared(policy: dict[str, Any], messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    call = call_for(messages, **fields)
    await pipeline(policy).prepare(call)
    result: dict[str, Any] = orjson.loads(dump_body(call.body))
    return result
