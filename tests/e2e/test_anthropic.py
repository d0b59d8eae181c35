"""A policy on a `kind: anthropic` upstream, driven with the openai SDK: what the Messages API receives,
and what the client gets back (whole, streamed, tools, images, errors, retries, fallbacks, every layer)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import orjson
import pytest

from tests.conftest import GatewayProcess
from tests.fakes.anthropic import KEY, FakeAnthropic
from tests.fakes.upstream import FakeUpstream

SCHEMA = {"type": "object", "properties": {"category": {"type": "string"}}, "required": ["category"]}
LAYERS = f"""
prompt: {{version: t1, system: "Triage tickets for {{{{ company }}}}.", vars: {{company: Acme}}}}
few_shot:
  examples:
    - {{input: "card charged twice", output: {{category: billing}}}}
output: {{json_schema: {orjson.dumps(SCHEMA).decode()}, max_retries: 1}}
"""
WEATHER = {
    "type": "function",
    "function": {"name": "weather", "description": "Weather in a city", "parameters": {"type": "object"}},
}
USER = [{"role": "user", "content": "my card was charged twice"}]


@pytest.fixture(scope="module")
def fake_claude() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def claude(fake_claude: FakeAnthropic) -> FakeAnthropic:
    fake_claude.reset()
    return fake_claude


@pytest.fixture(scope="module")
def gateway(start_gateway, fake_upstream: FakeUpstream, fake_claude: FakeAnthropic) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(
        {
            "prefit.yaml": f"""
upstreams:
  openai: {{base_url: {fake_upstream.base_url}}}
  claude: {{kind: anthropic, base_url: {fake_claude.base_url}, api_key: {KEY}}}
default_upstream: openai
cache: {{enabled: false}}
resilience: {{retries: 2, backoff_s: 0, backoff_max_s: 8}}
prices:
  claude-haiku-4-5: {{input: 1.0, output: 5.0}}
""",
            "policies/chat.yaml": "upstream: claude\nupstream_model: claude-haiku-4-5\n",
            "policies/overloaded.yaml": "upstream: claude\nupstream_model: claude-overloaded\n"
            "fallbacks: [{upstream: openai, upstream_model: gpt-4o-mini}]\n",
            "policies/triage-gpt.yaml": "upstream: openai\nupstream_model: fake-json-flaky\n" + LAYERS,
            "policies/triage-claude.yaml": "upstream: claude\nupstream_model: claude-haiku-4-5\n" + LAYERS,
            "policies/pipeline.yaml": """
upstream: claude
upstream_model: claude-haiku-4-5
steps:
  - {name: triage, model: triage-claude}
  - {name: answer, system: Answer briefly., input: "{{ steps.triage.json.category }}: {{ input }}"}
""",
        }
    )


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)


def test_whole_answer_usage_and_price(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    reply = raw.parse()
    assert reply.choices[0].message.content == "echo: hi" and reply.choices[0].finish_reason == "stop"
    sent = claude.last("/v1/messages")
    assert sent.headers["x-api-key"] == KEY and sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.body == {
        "model": "claude-haiku-4-5",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "stream": False,
    }
    assert reply.usage is not None and reply.usage.completion_tokens == 7
    expected = (reply.usage.prompt_tokens * 1.0 + 7 * 5.0) / 1e6
    assert float(raw.headers["x-prefit-cost-usd"]) == pytest.approx(expected, rel=1e-3)


def test_streamed_answer_with_usage(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    chunks = list(
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "one two"}],
            max_tokens=99,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
        11,
        7,
    )
    assert claude.last("/v1/messages").body["max_tokens"] == 99


def test_tool_call_round_trip(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    ask = [{"role": "user", "content": "weather in Paris?"}]
    first = client.chat.completions.create(model="chat", messages=ask, tools=[WEATHER], tool_choice="required")  # type: ignore[arg-type,list-item]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, orjson.loads(call.function.arguments)) == ("weather", {"city": "Paris"})  # type: ignore[union-attr]
    sent = claude.last("/v1/messages").body
    assert sent["tools"] == [
        {"name": "weather", "input_schema": {"type": "object"}, "description": "Weather in a city"}
    ]
    assert sent["tool_choice"] == {"type": "any"}
    turns = [
        *ask,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = client.chat.completions.create(model="chat", messages=turns, tools=[WEATHER])  # type: ignore[arg-type,list-item]
    assert second.choices[0].message.content == "tool said: sunny"
    assert [m["role"] for m in claude.last("/v1/messages").body["messages"]] == ["user", "assistant", "user"]
    assert claude.last("/v1/messages").body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_01", "name": "weather", "input": {"city": "Paris"}}
    ]


def test_streamed_tool_call_works_with_the_stream_helper(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    with client.chat.completions.stream(
        model="chat",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER],  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.id == "toolu_01" and orjson.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("url", "answer"),
    [("data:image/png;base64,iVBORw0KGgo=", "an image by base64"), ("https://x.test/a.png", "an image by url")],
)
def test_images(client: openai.OpenAI, claude: FakeAnthropic, url: str, answer: str) -> None:
    content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]
    reply = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": content}])  # type: ignore[list-item,misc]
    assert reply.choices[0].message.content == answer


def test_429_with_a_short_retry_after_is_retried(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    claude.failures.append((429, "rate_limit_error", {"retry-after": "0"}))
    reply = client.chat.completions.create(model="chat", messages=USER)
    assert reply.choices[0].message.content == "echo: my card was charged twice"
    assert len(claude.messages_sent()) == 2


def test_429_with_a_long_retry_after_reaches_the_client_in_openai_shape(
    client: openai.OpenAI, claude: FakeAnthropic
) -> None:
    claude.failures.append((429, "rate_limit_error", {"retry-after": "60"}))
    with pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(model="chat", messages=USER)
    assert error.value.response.headers["retry-after"] == "60"
    assert error.value.body == {
        "message": "scripted 429",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_error",
    }
    assert len(claude.messages_sent()) == 1


def test_529_is_retried_then_falls_back(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    raw = client.chat.completions.with_raw_response.create(model="overloaded", messages=USER)
    assert raw.headers["x-prefit-upstream"] == "openai"
    assert raw.parse().choices[0].message.content == "echo: my card was charged twice"
    assert len(claude.messages_sent()) == 3


def test_a_request_the_api_refuses_is_a_400_in_openai_shape(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    orphan = [*USER, {"role": "tool", "tool_call_id": "toolu_nope", "content": "x"}]
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="chat", messages=orphan)  # type: ignore[arg-type]
    assert error.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert "toolu_nope" in error.value.body["message"]  # type: ignore[index]
    assert len(claude.messages_sent()) == 1, "a client error is not retried"


def test_switching_a_policy_to_claude_keeps_every_layer(
    client: openai.OpenAI, claude: FakeAnthropic, upstream: FakeUpstream
) -> None:
    gpt = client.chat.completions.with_raw_response.create(model="triage-gpt", messages=USER)
    claude.replies[:] = ["Sure, a billing question.", '{"category": "billing"}']
    raw = client.chat.completions.with_raw_response.create(model="triage-claude", messages=USER)
    assert raw.parse().choices[0].message.content == '{"category": "billing"}'
    assert raw.headers["x-prefit-output-valid"] == gpt.headers["x-prefit-output-valid"] == "true"
    assert raw.headers["x-prefit-prompt-version"] == "t1"
    first, reask = claude.messages_sent()
    assert first["system"] == "Triage tickets for Acme."
    assert first["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "card charged twice"}]},
        {"role": "assistant", "content": [{"type": "text", "text": '{"category":"billing"}'}]},
        {"role": "user", "content": [{"type": "text", "text": "my card was charged twice"}]},
    ]
    assert first["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert first["max_tokens"] == 4096
    assert [m["role"] for m in reask["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert reask["messages"][3]["content"] == [{"type": "text", "text": "Sure, a billing question."}]
    # the same layers produced the same conversation for the OpenAI upstream
    openai_first = next(r.body for r in upstream.requests if r.path == "/v1/chat/completions")
    assert openai_first["messages"][0] == {"role": "system", "content": first["system"]}
    assert [m["content"] for m in openai_first["messages"][1:]] == [m["content"][0]["text"] for m in first["messages"]]


def test_a_chain_step_runs_on_claude(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    claude.replies.append('{"category": "billing"}')
    reply = client.chat.completions.create(model="pipeline", messages=USER)
    assert reply.choices[0].message.content == "echo: billing: my card was charged twice"
    triage, answer = claude.messages_sent()
    assert triage["system"] == "Triage tickets for Acme."
    assert answer["system"] == "Answer briefly."
    assert answer["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "billing: my card was charged twice"}]}
    ]
