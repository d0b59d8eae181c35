"""The params layer, unit-tested with no network: upstream model named, defaults filled, client wins."""

from __future__ import annotations

from pathlib import Path

import orjson

from gateway.policy import PolicySpec
from gateway.wire import dump_body, parse_chat_request
from middleware.base import BuildContext, Call
from middleware.params import ParamsLayer


async def test_defaults_fill_only_what_the_client_left_out() -> None:
    spec = PolicySpec.model_validate({"upstream_model": "gpt-4o-mini", "params": {"temperature": 0, "top_p": 0.5}})
    layer = ParamsLayer.build(spec, BuildContext("bot", Path(".")))
    assert layer is not None
    call = Call("r1", parse_chat_request(b'{"model":"bot","messages":[],"top_p":0.9,"temperature":null}'))
    await layer.prepare(call)
    assert orjson.loads(dump_body(call.body)) == {
        "model": "gpt-4o-mini",
        "messages": [],
        "top_p": 0.9,
        "temperature": 0,
    }


async def test_upstream_model_defaults_to_policy_name() -> None:
    layer = ParamsLayer.build(PolicySpec(), BuildContext("bot", Path(".")))
    assert layer is not None
    call = Call("r1", parse_chat_request(b'{"model":"bot","messages":[]}'))
    await layer.prepare(call)
    assert call.body.model == "bot"
