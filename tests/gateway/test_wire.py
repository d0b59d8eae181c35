"""Request parsing at the edge: unknown fields survive, wrong types name their param."""

from __future__ import annotations

import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.wire import ChatMessage, dump_body, parse_chat_request


def test_unknown_fields_and_explicit_nulls_survive_a_round_trip() -> None:
    raw = b'{"model":"m","messages":[{"role":"user","content":"hi","name":"n"}],"logit_bias":{"1":2},"seed":null}'
    assert orjson.loads(dump_body(parse_chat_request(raw))) == orjson.loads(raw)


def test_layers_edits_are_serialised() -> None:
    chat = parse_chat_request(b'{"model":"m","messages":[{"role":"user","content":"hi"}]}')
    chat.messages.insert(0, ChatMessage(role="system", content="be brief"))
    chat.temperature = 0  # type: ignore[attr-defined]
    assert orjson.loads(dump_body(chat)) == {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "temperature": 0,
    }


@pytest.mark.parametrize(
    ("raw", "param", "code"),
    [
        (b"not json", None, "invalid_json"),
        (b"[1]", None, "invalid_json"),
        (b'{"model": ["x"], "messages": []}', "model", "invalid_type"),
        (b'{"model": "m"}', "messages", "missing_required_parameter"),
        (b'{"model": "m", "messages": [{"role": "user", "content": 5}]}', "messages[0].content", "invalid_type"),
        (b'{"model": "m", "messages": [], "stream": "yes"}', "stream", "invalid_type"),
    ],
)
def test_bad_bodies(raw: bytes, param: str | None, code: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(raw)
    assert caught.value.param == param
    assert caught.value.code == code
    assert caught.value.status == 400
