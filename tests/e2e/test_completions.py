"""Plain completions through a policy: its prompt and examples in the prompt text, or a 400 naming
the layer that cannot apply; never answered without them."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import GatewayProcess
from tests.fakes.upstream import FakeUpstream


@pytest.fixture(scope="module")
def gateway(start_gateway, fake_upstream: FakeUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(
        {
            "prefit.yaml": f"""
            upstreams:
              fake: {{base_url: {fake_upstream.base_url}}}
            default_upstream: fake
            cache: {{enabled: false}}
            """,
            "policies/writer.yaml": """
            upstream_model: gpt-3.5-turbo-instruct
            params: {temperature: 0.1}
            prompt: {version: v7, system: "Write for {{ metadata.team }}.", metadata: [team]}
            few_shot:
              examples:
                - {input: "a haiku on rain", output: "Soft rain on the roof"}
            """,
            "policies/checked.yaml": """
            upstream_model: gpt-3.5-turbo-instruct
            prompt: {system: Answer in JSON.}
            output: {json_schema: {type: object}}
            """,
            "policies/thinker.yaml": "upstream_model: m\nprompt: {system: Think., reasoning: {}}\n",
        }
    )


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)


def test_prompt_and_examples_are_laid_out_before_the_prompt(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.completions.with_raw_response.create(
        model="writer", prompt="a haiku on snow", extra_body={"metadata": {"team": "docs"}}
    )
    sent = upstream.last("/v1/completions").body
    assert sent["model"] == "gpt-3.5-turbo-instruct" and sent["temperature"] == 0.1
    assert sent["prompt"] == (
        "Write for docs.\n\nUser: a haiku on rain\nAssistant: Soft rain on the roof\n\na haiku on snow"
    )
    assert raw.headers["x-prefit-prompt-version"] == "v7"


def test_each_prompt_of_a_list_gets_the_layout(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    client.completions.create(model="writer", prompt=["one", "two"])
    prompts = upstream.last("/v1/completions").body["prompt"]
    assert [p.rsplit("\n\n", 1)[1] for p in prompts] == ["one", "two"]
    assert all(p.startswith("Write for .\n\nUser: a haiku on rain") for p in prompts)


def test_streamed_completion_carries_the_prompt(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    text = "".join(c.choices[0].text for c in client.completions.create(model="writer", prompt="go", stream=True))
    assert text == "done streaming"
    assert upstream.last("/v1/completions").body["prompt"].endswith("Soft rain on the roof\n\ngo")


def test_token_prompts_are_refused_when_the_policy_has_a_prompt(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError, match="not token ids"):
        client.completions.create(model="writer", prompt=[1, 2, 3])
    assert not upstream.requests


@pytest.mark.parametrize(
    ("model", "layer", "line"),
    [("checked", "output validation", "checked.yaml:3"), ("thinker", "reasoning extraction", "thinker.yaml:2")],
)
def test_layers_that_read_the_reply_are_refused_by_name(
    client: openai.OpenAI, upstream: FakeUpstream, model: str, layer: str, line: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=model, prompt="x")
    message = str(caught.value)
    assert layer in message and line in message and "/v1/chat/completions" in message
    assert not upstream.requests
