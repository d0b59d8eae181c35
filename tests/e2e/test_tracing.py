"""OpenTelemetry traces end to end: a chain's request, steps, layer stages and upstream calls
arrive at an OTLP/HTTP receiver as one trace continuing the client's ``traceparent``, with the
GenAI attributes and no prompt or completion text."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import GatewayProcess
from tests.fakes.otlp import OtlpReceiver, ReceivedSpan
from tests.fakes.roles import RoleUpstream

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    started = OtlpReceiver().start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def roles() -> Iterator[RoleUpstream]:
    upstream = RoleUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def gateway(start_gateway, roles: RoleUpstream, receiver: OtlpReceiver) -> GatewayProcess:  # type: ignore[no-untyped-def]
    def policy(system: str) -> str:
        return f"upstream_model: m\nprompt: {{system: {system}, version: v7}}\n"

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # export promptly, so the test waits less
        return start_gateway(
            {
                "prefit.yaml": f"upstreams:\n  fake: {{base_url: {roles.base_url}}}\ndefault_upstream: fake\n"
                f"tracing: {{otlp_endpoint: '{receiver.endpoint}', service_name: prefit-test}}\n",
                "policies/extract.yaml": policy("Extract the entities."),
                "policies/classify.yaml": policy("Classify the sentiment."),
                "policies/summarise.yaml": "upstream_model: m\n"  # a template that reads the request: a render stage
                "prompt: {system: 'Summarise the sentiment{{ metadata.team }}.', metadata: [team]}\n",
                "policies/sentiment.yaml": """
                steps:
                  - {name: extract, model: extract}
                  - name: classify
                    model: classify
                    for_each: "{{ steps.extract.json.entities }}"
                    input: "{{ item }}"
                  - {name: summary, model: summarise, input: "{{ steps.classify.output }}"}
                """,
            }
        )


def _trace(receiver: OtlpReceiver) -> list[ReceivedSpan]:
    def complete(spans: list[ReceivedSpan]) -> bool:
        mine = [s for s in spans if s.trace_id == TRACE_ID]
        return any(s.name.startswith("POST ") for s in mine) and sum(s.name.startswith("chat ") for s in mine) == 4

    assert receiver.wait_for(complete), [s.name for s in receiver.spans]
    return [s for s in receiver.spans if s.trace_id == TRACE_ID]


def test_a_chain_request_is_one_trace_with_genai_attributes(
    gateway: GatewayProcess, receiver: OtlpReceiver, roles: RoleUpstream
) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    text = "Alice loves Paris secretly"
    reply = client.chat.completions.create(
        model="sentiment",
        messages=[{"role": "user", "content": text}],
        extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
    )
    spans = _trace(receiver)
    by_id = {s.span_id: s for s in spans}
    (server,) = [s for s in spans if s.name == "POST /v1/chat/completions"]
    assert server.parent_span_id == PARENT_ID  # the client's trace, continued
    assert server.service == "prefit-test"
    assert server.attributes["prefit.policy"] == "sentiment"
    assert server.attributes["gen_ai.usage.input_tokens"] == 4
    steps = [s for s in spans if s.name.startswith("step ")]
    assert sorted(s.name for s in steps) == ["step classify", "step classify", "step extract", "step summary"]
    assert all(s.parent_span_id == server.span_id for s in steps)
    calls = [s for s in spans if s.name == "chat m"]
    assert {by_id[c.parent_span_id].name for c in calls} == {"step extract", "step classify", "step summary"}
    extract_call = next(c for c in calls if by_id[c.parent_span_id].name == "step extract")
    assert extract_call.attributes["gen_ai.request.model"] == "m"
    assert extract_call.attributes["gen_ai.provider.name"] == "openai"
    assert extract_call.attributes["gen_ai.usage.input_tokens"] == 1
    assert extract_call.attributes["gen_ai.usage.output_tokens"] == 1
    assert extract_call.attributes["prefit.policy"] == "extract"
    assert extract_call.attributes["prefit.prompt_version"] == "v7"
    (stage,) = [s for s in spans if s.name == "stage render"]
    assert by_id[stage.parent_span_id].name == "step summary"  # timed while the step prepared its call
    answer = reply.choices[0].message.content or ""
    shown = [str(v) for s in spans for v in s.attributes.values()]
    assert not any(text in v or "Alice" in v or answer in v for v in shown)  # no prompt or completion text
