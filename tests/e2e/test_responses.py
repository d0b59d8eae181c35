"""The Responses API through policies, driven by the openai SDK and the OpenAI Agents SDK: what the
upstream received (native ``/responses`` or translated chat completions) and what the client got."""

from __future__ import annotations

import asyncio
import textwrap

import openai
import orjson
import pytest

from tests.conftest import UPSTREAM_KEY, GatewayProcess
from tests.fakes.upstream import FakeUpstream

SCHEMA = {"type": "object", "properties": {"category": {"type": "string"}}, "required": ["category"]}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def gateway(start_gateway, fake_upstream: FakeUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    support = textwrap.dedent(
        """
    params: {temperature: 0.2}
    prompt: {version: v2, system: You are Acme support.}
    few_shot:
      examples:
        - {input: "where is my parcel", output: "Let me check the tracking for you."}
    """
    )
    return start_gateway(
        {
            "prefit.yaml": f"""
            upstreams:
              native: {{base_url: {fake_upstream.base_url}, api_key: {UPSTREAM_KEY}}}
              chat: {{base_url: {fake_upstream.base_url}, responses_api: translate}}
            default_upstream: native
            """,
            "policies/support.yaml": "upstream: native\nupstream_model: gpt-4o-mini\n" + support,
            "policies/support-chat.yaml": "upstream: chat\nupstream_model: gpt-4o-mini\n" + support,
            "policies/ticket.yaml": "upstream: native\nupstream_model: gpt-4o-mini\n"
            f"output: {{json_schema: {orjson.dumps(SCHEMA).decode()}, max_retries: 0}}\n",
            "policies/ticket-chat.yaml": "upstream: chat\nupstream_model: fake-json-good\n"
            f"output: {{json_schema: {orjson.dumps(SCHEMA).decode()}, max_retries: 0}}\n",
            "policies/thinker-chat.yaml": "upstream: chat\nupstream_model: fake-reason\n"
            "prompt: {system: Be exact., reasoning: {}}\n",
            "policies/tools.yaml": "upstream: native\nupstream_model: fake-tool\nprompt: {system: Use the tools.}\n",
            "policies/tools-chat.yaml": "upstream: chat\nupstream_model: fake-tool\nprompt: {system: Use the tools.}\n",
            "policies/falls-back.yaml": "upstream: native\nupstream_model: fake-500\n"
            "fallbacks: [{upstream: chat, upstream_model: gpt-4o-mini}]\n",
            "policies/cached.yaml": "upstream: native\nupstream_model: gpt-4o-mini\nparams: {temperature: 0}\n",
            "policies/limited.yaml": "upstream: chat\nupstream_model: gpt-4o-mini\n"
            "rate_limit: {requests_per_minute: 1}\n",
            "policies/breaks.yaml": "upstream: chat\nupstream_model: fake-stream-error\n",
            "policies/tools-checked.yaml": "upstream: chat\nupstream_model: fake-tool\n"
            f"output: {{json_schema: {orjson.dumps(SCHEMA).decode()}, max_retries: 0}}\n",
        }
    )


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)


def test_native_whole_sends_the_policy_to_responses(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.responses.with_raw_response.create(
        model="support", instructions="Answer in English.", input="my parcel is late", max_output_tokens=50
    )
    reply = raw.parse()
    sent = upstream.last("/v1/responses").body
    assert sent["model"] == "gpt-4o-mini"
    assert sent["temperature"] == 0.2
    assert sent["max_output_tokens"] == 50
    assert "instructions" not in sent
    assert sent["input"] == [
        {"role": "system", "content": "You are Acme support."},
        {"role": "system", "content": "Answer in English."},
        {"role": "user", "content": "where is my parcel"},
        {"role": "assistant", "content": "Let me check the tracking for you."},
        {"role": "user", "content": "my parcel is late"},
    ]
    assert reply.output_text == "responded: my parcel is late"
    assert reply.model == "support"
    assert reply.usage is not None and reply.usage.input_tokens == 7 and reply.usage.output_tokens == 5
    assert raw.headers["x-prefit-policy"] == "support"
    assert raw.headers["x-prefit-prompt-version"] == "v2"
    assert raw.headers["x-prefit-upstream"] == "native"


def test_translate_whole_sends_chat(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    reply = client.responses.create(model="support-chat", input=[{"role": "user", "content": "hello there"}])
    assert not [r for r in upstream.requests if r.path == "/v1/responses"]
    sent = upstream.last("/v1/chat/completions").body
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["messages"][0]["content"] == "You are Acme support."
    assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0.2
    assert reply.output_text == "echo: hello there"
    assert reply.usage is not None and reply.usage.total_tokens > 0


@pytest.mark.parametrize("model", ["support", "support-chat"])
def test_streamed_events(client: openai.OpenAI, upstream: FakeUpstream, model: str) -> None:
    with client.responses.stream(model=model, input="stream me") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    expected = "responded: stream me" if model == "support" else "echo: stream me"
    assert final.output_text == expected
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert {"response.output_item.added", "response.output_text.delta", "response.output_text.done"} <= set(kinds)
    assert final.usage is not None and final.usage.output_tokens > 0
    sent = upstream.requests[-1].body
    first = sent["input"][0] if model == "support" else sent["messages"][0]
    assert first["content"] == "You are Acme support."


def test_output_format_is_text_format_on_native(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.responses.with_raw_response.create(model="ticket", input="card charged twice")
    sent = upstream.last("/v1/responses").body
    assert sent["text"]["format"]["type"] == "json_schema"
    assert sent["text"]["format"]["schema"] == SCHEMA
    assert raw.headers["x-prefit-output-valid"] == "false"  # the fake's echo is not JSON


def test_output_format_validated_on_translate(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.responses.with_raw_response.create(model="ticket-chat", input="card charged twice")
    sent = upstream.last("/v1/chat/completions").body
    assert sent["response_format"]["type"] == "json_schema"
    assert orjson.loads(raw.parse().output_text) == {"category": "billing", "priority": 2}
    assert raw.headers["x-prefit-output-valid"] == "true"


def test_client_text_format_reaches_chat(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    fmt = {"type": "json_schema", "name": "ticket", "schema": SCHEMA, "strict": True}
    client.responses.create(model="support-chat", input="x", text={"format": fmt})  # type: ignore[typeddict-item]
    sent = upstream.last("/v1/chat/completions").body
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "ticket", "schema": SCHEMA, "strict": True},
    }


def test_reasoning_streamed_gives_only_the_answer(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    with client.responses.stream(model="thinker-chat", input="six times seven?") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.output_text == "42" and "".join(deltas) == "42"
    assert upstream.last("/v1/chat/completions").body.get("stream") is None


@pytest.mark.parametrize("model", ["tools", "tools-chat"])
@pytest.mark.parametrize("stream", [False, True])
def test_function_calls_round_trip(client: openai.OpenAI, upstream: FakeUpstream, model: str, stream: bool) -> None:
    if stream:
        with client.responses.stream(model=model, input="weather in Paris?", tools=[WEATHER]) as events:  # type: ignore[list-item]
            first = events.get_final_response()
    else:
        first = client.responses.create(model=model, input="weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, c.arguments, c.call_id) for c in calls] == [("get_weather", '{"city": "Paris"}', "call_1")]
    follow_up = [
        {"role": "user", "content": "weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ]
    second = client.responses.create(model=model, input=follow_up, tools=[WEATHER])  # type: ignore[arg-type,list-item]
    assert second.output_text == "tool said: sunny"
    sent = upstream.requests[-1].body
    if model == "tools":
        assert sent["tools"][0]["name"] == "get_weather"
        assert [item.get("type", "message") for item in sent["input"]] == [
            "message",
            "message",
            "function_call",
            "function_call_output",
        ]
    else:
        assert sent["tools"][0]["function"]["name"] == "get_weather"
        assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "tool"]
        assert sent["messages"][2]["tool_calls"][0]["id"] == "call_1"
        assert sent["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


def test_stateful_request_on_translate_is_refused(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="support-chat", input="again", previous_response_id="resp_9")
    assert "previous_response_id" in str(caught.value) and "translate" in str(caught.value)
    assert not upstream.requests
    client.responses.create(model="support", input="again", previous_response_id="resp_9")
    assert upstream.last("/v1/responses").body["previous_response_id"] == "resp_9"


def test_other_models_pass_through(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.responses.with_raw_response.create(model="gpt-4o", input="as is")
    assert raw.headers["x-prefit-policy"] == "passthrough"
    assert upstream.last("/v1/responses").body == {"model": "gpt-4o", "input": "as is"}
    assert raw.parse().output_text == "responded: as is"


def test_models_retrieve(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    model = client.models.retrieve("support")
    assert model.id == "support" and model.owned_by == "prefit"
    listed = next(m for m in client.models.list() if m.id == "support")
    assert model.model_dump() == listed.model_dump()
    upstream.reset()
    client.models.retrieve("gpt-4o")
    assert upstream.last().path == "/v1/models/gpt-4o"


def test_agents_sdk_runs_an_agent_on_a_policy(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    agents = pytest.importorskip("agents")
    seen: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return "sunny"

    async def run() -> str:
        agents.set_default_openai_client(
            openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused"), use_for_tracing=False
        )
        agents.set_tracing_disabled(True)
        agent = agents.Agent(name="weather", instructions="Be brief.", model="tools", tools=[get_weather])
        result = await agents.Runner.run(agent, "weather in Paris?")
        return str(result.final_output)

    assert asyncio.run(run()) == "tool said: sunny"
    assert seen == ["Paris"]
    first, second = [r.body for r in upstream.requests if r.path == "/v1/responses"]
    assert first["model"] == "fake-tool"
    assert first["input"][:2] == [
        {"role": "system", "content": "Use the tools."},
        {"role": "system", "content": "Be brief."},
    ]
    assert second["input"][-1]["type"] == "function_call_output"


def test_chat_stream_helper_through_a_whole_answer_policy(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    tool = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    with client.chat.completions.stream(
        model="tools-checked",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[tool],  # type: ignore[list-item]
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert upstream.last("/v1/chat/completions").body.get("stream") is None  # answered whole, replayed
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "get_weather", '{"city": "Paris"}')


def test_native_failure_falls_back_to_a_translated_upstream(
    client: openai.OpenAI, upstream: FakeUpstream, gateway: GatewayProcess
) -> None:
    raw = client.responses.with_raw_response.create(model="falls-back", input="help")
    assert raw.parse().output_text == "echo: help"
    assert [r.path for r in upstream.requests][-2:] == ["/v1/responses", "/v1/chat/completions"]
    assert raw.headers["x-prefit-upstream"] == "chat"
    metrics = gateway.metrics()
    assert 'policy="falls-back"' in metrics and 'upstream="chat"' in metrics


def test_store_true_on_translate_is_refused(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError, match="store"):
        client.responses.create(model="support-chat", input="x", store=True)
    assert not upstream.requests


def test_a_stream_that_fails_midway_ends_with_an_error_event(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="breaks", input="x", stream=True))
    assert events[0].type == "response.created"
    last = events[-1]
    assert last.type == "error" and "crashed" in last.message
    assert last.sequence_number == events[-2].sequence_number + 1


def test_cache_and_rate_limits_apply(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    first = client.responses.with_raw_response.create(model="cached", input="same question")
    second = client.responses.with_raw_response.create(model="cached", input="same question")
    assert (first.headers["x-prefit-cache"], second.headers["x-prefit-cache"]) == ("miss", "hit")
    assert second.parse().output_text == "responded: same question"
    assert len([r for r in upstream.requests if r.path == "/v1/responses"]) == 1
    client.responses.create(model="limited", input="one")
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="limited", input="two")
