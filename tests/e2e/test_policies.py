"""Policies end to end: what the upstream receives for each layer, variants, render, validation."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter

import httpx
import openai
import orjson
import pytest

from tests.conftest import UPSTREAM_KEY, GatewayProcess
from tests.fakes.upstream import FakeUpstream

SCHEMA = {
    "type": "object",
    "properties": {"category": {"enum": ["billing", "shipping"]}, "priority": {"type": "integer"}},
    "required": ["category", "priority"],
}


@pytest.fixture(scope="module")
def gateway(start_gateway, fake_upstream: FakeUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(
        {
            "prefit.yaml": f"""
            upstreams:
              fake: {{base_url: {fake_upstream.base_url}, api_key: {UPSTREAM_KEY}}}
              plain: {{base_url: {fake_upstream.base_url}, supports_json_schema: false}}
            default_upstream: fake
            admin_keys: [admin-key]
            cache: {{enabled: false}}
            """,
            "policies/triage.yaml": """
            upstream_model: fake-json-flaky
            params: {temperature: 0.5}
            force: {top_p: 1}
            prompt:
              version: v3
              system: file:prompts/triage.md
              vars: {company: Acme}
              metadata: [tier]
              client_system: replace
            few_shot:
              examples:
                - {input: "card charged twice", output: {category: billing, priority: 1}}
            output: {json_schema: file:schemas/ticket.json, max_retries: 1}
            """,
            "policies/prompts/triage.md": "Triage tickets for {{ company }}. Customer tier: {{ metadata.tier }}.\n",
            "policies/schemas/ticket.json": orjson.dumps(SCHEMA).decode(),
            "policies/never-json.yaml": "upstream_model: fake-json-bad\n"
            f"output: {{json_schema: {orjson.dumps(SCHEMA).decode()}, "
            "max_retries: 1}\n",
            "policies/strict-json.yaml": "upstream: plain\nupstream_model: fake-json-bad\n"
            "output: {json_schema: {type: object}, max_retries: 0, on_invalid: error}\n",
            "policies/thinker.yaml": "upstream_model: fake-reason\nprompt: {system: Be exact., reasoning: {}}\n",
            "policies/ab.yaml": """
            upstream_model: gpt-4o-mini
            prompt: {version: base, system: Base prompt.}
            variants:
              - {name: control, weight: 70}
              - {name: treatment, weight: 30, upstream_model: gpt-4o, prompt: {version: new, system: New prompt.}}
              - {name: retired, weight: 0}
            """,
        }
    )


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)


TICKET = [{"role": "system", "content": "client system, replaced"}, {"role": "user", "content": "parcel is late"}]


def test_every_layer_shapes_what_the_upstream_receives(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="triage", messages=TICKET, temperature=0.1, top_p=0.2, metadata={"tier": "gold", "other": "x"}
    )
    assert raw.headers["x-prefit-prompt-version"] == "v3"
    assert raw.headers["x-prefit-output-valid"] == "true"
    assert orjson.loads(raw.parse().choices[0].message.content or "") == {"category": "billing", "priority": 2}
    first, second = [r.body for r in upstream.requests if r.path == "/v1/chat/completions"]
    schema_format = {"type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA, "strict": True}}
    assert first == {
        "model": "fake-json-flaky",
        "messages": [
            {"role": "system", "content": "Triage tickets for Acme. Customer tier: gold."},
            {"role": "user", "content": "card charged twice"},
            {"role": "assistant", "content": '{"category":"billing","priority":1}'},
            {"role": "user", "content": "parcel is late"},
        ],
        "temperature": 0.1,
        "top_p": 1,
        "metadata": {"tier": "gold", "other": "x"},
        "response_format": schema_format,
    }
    assert second["messages"][:4] == first["messages"]
    assert second["messages"][4] == {"role": "assistant", "content": "Sure! It is a billing question, fairly urgent."}
    assert "does not match the required JSON Schema: the answer is not valid JSON" in second["messages"][5]["content"]


def test_render_equals_what_the_upstream_received(
    client: openai.OpenAI, gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    request = {"model": "triage", "messages": TICKET, "metadata": {"tier": "silver"}}
    rendered = httpx.post(gateway.url + "/v1/render", json=request).json()
    assert rendered["variant"] == "default" and rendered["prompt_version"] == "v3"
    assert len(rendered["prompt_hash"]) == 12
    client.chat.completions.create(**request)  # type: ignore[call-overload]
    assert rendered["body"] == upstream.requests[0].body
    assert not [r for r in upstream.requests if r.path == "/v1/render"]


def test_cli_render_equals_what_the_upstream_received(
    client: openai.OpenAI, gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    client.chat.completions.create(model="ab", messages=[{"role": "user", "content": "hello"}], user="u-7")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "render", "ab", "--message", "hello", "--user", "u-7"],
        cwd=gateway.workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == upstream.last("/v1/chat/completions").body


def test_invalid_after_retries_is_marked_or_refused(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(model="never-json", messages=TICKET)
    assert raw.headers["x-prefit-output-valid"] == "false"
    assert len(upstream.requests) == 2
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="strict-json", messages=TICKET)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "output_invalid"  # type: ignore[index]
    sent = upstream.last("/v1/chat/completions").body
    assert "response_format" not in sent
    assert "conforms to this JSON Schema" in sent["messages"][0]["content"]


def test_streamed_request_to_a_validating_policy_is_validated_first(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="triage", messages=TICKET, stream=True, stream_options={"include_usage": True}
    ) as response:
        assert response.headers["x-prefit-output-valid"] == "true"
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert orjson.loads(text) == {"category": "billing", "priority": 2}
    assert chunks[-1].usage is not None
    sent = [r.body for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert sent, "the upstream was called"
    assert all("stream" not in body and "stream_options" not in body for body in sent), sent


def test_reasoning_stays_with_the_gateway(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    reply = client.chat.completions.create(model="thinker", messages=[{"role": "user", "content": "6*7?"}])
    assert reply.choices[0].message.content == "42"
    streamed = client.chat.completions.create(
        model="thinker", messages=[{"role": "user", "content": "6*7?"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "42"
    assert "Think through the problem step by step" in upstream.requests[0].body["messages"][0]["content"]


def test_variant_overrides_are_deep_merged_and_reported(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    seen = {}
    for user in (f"user-{i}" for i in range(40)):
        raw = client.chat.completions.with_raw_response.create(
            model="ab", messages=[{"role": "user", "content": "hi"}], user=user
        )
        seen[raw.headers["x-prefit-variant"]] = (raw.headers["x-prefit-prompt-version"], upstream.last().body)
    assert set(seen) == {"control", "treatment"}
    assert seen["treatment"][0] == "new"
    assert seen["treatment"][1]["model"] == "gpt-4o"
    assert seen["treatment"][1]["messages"][0] == {"role": "system", "content": "New prompt."}
    assert seen["control"][1]["messages"][0] == {"role": "system", "content": "Base prompt."}


async def test_variant_split_follows_weights_and_sticks(gateway: GatewayProcess) -> None:
    limit = asyncio.Semaphore(16)

    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:

        async def variant_for(user: str | None) -> str:
            body: dict[str, object] = {"model": "ab", "messages": [{"role": "user", "content": "x"}]}
            if user is not None:
                body["user"] = user
            async with limit:
                reply = await http.post("/v1/render", json=body)
            return str(reply.json()["variant"])

        sticky = Counter(await asyncio.gather(*[variant_for(f"caller-{i}") for i in range(2000)]))
        # Without a sticky value the arm is random: 4,000 draws keep a false alarm below 1 in 10,000.
        unsticky = Counter(await asyncio.gather(*[variant_for(None) for _ in range(4000)]))
        again = await asyncio.gather(*[variant_for(f"caller-{i}") for i in range(200)])
        first = await asyncio.gather(*[variant_for(f"caller-{i}") for i in range(200)])
    for counts in (sticky, unsticky):
        total = sum(counts.values())
        assert abs(counts["control"] / total - 0.70) <= 0.03, counts
        assert abs(counts["treatment"] / total - 0.30) <= 0.03, counts
        assert counts["retired"] == 0
    assert again == first


def test_pinning_a_variant_needs_an_admin_key(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    body = {"model": "ab", "messages": [{"role": "user", "content": "x"}]}
    pinned = httpx.post(
        gateway.url + "/v1/chat/completions",
        json=body,
        headers={"x-prefit-variant": "retired", "Authorization": "Bearer admin-key"},
    )
    assert pinned.status_code == 200 and pinned.headers["x-prefit-variant"] == "retired"
    refused = httpx.post(
        gateway.url + "/v1/chat/completions",
        json=body,
        headers={"x-prefit-variant": "retired", "Authorization": "Bearer someone"},
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"
    unknown = httpx.post(
        gateway.url + "/v1/chat/completions",
        json=body,
        headers={"x-prefit-variant": "nope", "Authorization": "Bearer admin-key"},
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "variant_not_found"


def test_models_report_prompt_version_and_hash(client: openai.OpenAI) -> None:
    listing = httpx.get(str(client.base_url) + "models").json()["data"]
    triage = next(model for model in listing if model["id"] == "triage")
    assert triage["prefit"]["prompt_version"] == "v3"
    assert len(triage["prefit"]["prompt_hash"]) == 12
    ab = next(model for model in listing if model["id"] == "ab")
    assert [(v["name"], v["prompt_version"]) for v in ab["prefit"]["variants"]] == [
        ("control", "base"),
        ("treatment", "new"),
        ("retired", "base"),
    ]


def test_validation_and_injection_metrics(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    client.chat.completions.create(model="triage", messages=TICKET)
    text = gateway.metrics()
    assert 'prefit_output_validation_total{policy="triage",result="repaired"}' in text
    assert 'prefit_output_validation_total{policy="never-json",result="invalid"}' in text
    assert 'prefit_tokens_total{kind="injected",policy="triage",variant="default"}' in text
    assert 'prefit_stage_duration_seconds_count{stage="validate"}' in text
    assert 'prompt_version="v3"' in text
