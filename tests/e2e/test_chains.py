"""Decomposition chains end to end: steps in order, templates over earlier outputs, errors naming the step."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import GatewayProcess
from tests.fakes.upstream import FakeUpstream


@pytest.fixture(scope="module")
def gateway(start_gateway, fake_upstream: FakeUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {fake_upstream.base_url}, responses_api: translate}}\n"
            "default_upstream: fake\n"
            "cache: {enabled: false}\n",
            "policies/extract.yaml": "upstream_model: gpt-4o-mini\nprompt: {system: Extract the entities.}\n",
            "policies/label.yaml": "upstream_model: fake-json-good\n",
            "policies/failing.yaml": "upstream_model: fake-500\n",
            "policies/pipeline.yaml": """
            upstream_model: gpt-4o
            prompt: {version: c1, vars: {tone: brief}}
            steps:
              - {name: extract, model: extract}
              - {name: label, model: label, input: "Entities: {{ steps.extract.output }}"}
              - name: answer
                system: "Answer in a {{ tone }} way."
                input: "{{ steps.label.json.category }} / {{ input }}"
            """,
            "policies/breaks.yaml": """
            steps:
              - {name: extract, model: extract}
              - {name: explode, model: failing, input: "{{ steps.extract.output }}"}
            """,
        }
    )


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)


USER = [{"role": "user", "content": "my card was charged twice"}]


def test_steps_run_in_order_and_feed_each_other(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(model="pipeline", messages=USER)
    reply = raw.parse()
    assert reply.choices[0].message.content == "echo: billing / my card was charged twice"
    assert raw.headers["x-prefit-policy"] == "pipeline"
    sent = [r.body for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert [body["model"] for body in sent] == ["gpt-4o-mini", "fake-json-good", "gpt-4o"]
    assert sent[0]["messages"] == [{"role": "system", "content": "Extract the entities."}, *USER]
    assert sent[1]["messages"] == [{"role": "user", "content": "Entities: echo: my card was charged twice"}]
    assert sent[2]["messages"] == [
        {"role": "system", "content": "Answer in a brief way."},
        {"role": "user", "content": "billing / my card was charged twice"},
    ]
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 6 + 4 + 8  # every step's usage, summed


def test_a_chain_answers_the_responses_api(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    reply = client.responses.create(model="pipeline", input=USER[0]["content"])
    assert reply.output_text == "echo: billing / my card was charged twice"
    sent = list(upstream.requests)
    assert [r.path for r in sent] == ["/v1/chat/completions"] * 3
    assert [r.body["model"] for r in sent] == ["gpt-4o-mini", "fake-json-good", "gpt-4o"]
    chat = client.chat.completions.create(model="pipeline", messages=USER)
    assert reply.usage is not None and chat.usage is not None
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (
        chat.usage.prompt_tokens,
        chat.usage.completion_tokens,
    )


def test_last_step_streams(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    stream = client.chat.completions.create(
        model="pipeline", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: billing / my card was charged twice"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 6 + 4 + 7
    sent = [r.body for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert [body.get("stream") for body in sent] == [None, None, True]


def test_failing_step_is_named_in_the_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="breaks", messages=USER)
    assert caught.value.message == "Error code: 500 - step 'explode' failed: upstream 'fake' answered 500"


def test_render_shows_every_step(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    reply = httpx.post(gateway.url + "/v1/render", json={"model": "pipeline", "messages": USER})
    assert reply.status_code == 200, reply.text
    rendered = reply.json()
    assert [step["step"] for step in rendered["steps"]] == ["extract", "label", "answer"]
    assert rendered["steps"][1]["body"]["messages"] == [
        {"role": "user", "content": "Entities: <output of step extract>"}
    ]
    assert rendered["steps"][0]["body"]["messages"][0] == {"role": "system", "content": "Extract the entities."}
    assert not [r for r in upstream.requests if r.path == "/v1/chat/completions"]


def test_step_timings_in_metrics(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    client.chat.completions.create(model="pipeline", messages=USER)
    assert 'prefit_step_duration_seconds_count{policy="pipeline",step="label"}' in gateway.metrics()
