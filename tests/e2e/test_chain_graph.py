"""Chains beyond a straight line, end to end: for_each over an earlier step's list, route to the
policy a classifier picks, independent steps at once, and how render shows them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import GatewayProcess
from tests.fakes.roles import RoleUpstream


@pytest.fixture(scope="module")
def roles() -> Iterator[RoleUpstream]:
    upstream = RoleUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def role(roles: RoleUpstream) -> RoleUpstream:
    roles.reset()
    return roles


def _policy(system: str) -> str:
    return f"upstream_model: m\nprompt: {{system: {system}}}\n"


@pytest.fixture(scope="module")
def gateway(start_gateway, roles: RoleUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {roles.base_url}}}\ndefault_upstream: fake\n"
            "cache: {enabled: false}\n",
            "policies/extract.yaml": _policy("Extract the entities."),
            "policies/classify.yaml": _policy("Classify the sentiment."),
            "policies/summarise.yaml": _policy("Summarise the sentiment."),
            "policies/router.yaml": _policy("Route the request."),
            "policies/refunds.yaml": _policy("Summarise the refund request."),
            "policies/answers.yaml": _policy("Answer the question."),
            "policies/sentiment.yaml": """
            steps:
              - {name: extract, model: extract}
              - name: classify
                model: classify
                for_each: "{{ steps.extract.json.entities }}"
                concurrency: 2
                input: "{{ item }}"
              - {name: summary, model: summarise, input: "{{ steps.classify.output }}"}
            """,
            "policies/notalist.yaml": """
            steps:
              - {name: extract, model: extract}
              - {name: classify, model: classify, for_each: "{{ steps.extract.json }}", input: "{{ item }}"}
              - {name: summary, model: summarise, input: "{{ steps.classify.output }}"}
            """,
            "policies/triage.yaml": """
            steps:
              - {name: kind, model: router}
              - name: reply
                route: {on: "{{ steps.kind.output }}", cases: {complaint: refunds}, default: answers}
            """,
            "policies/strict.yaml": """
            steps:
              - {name: kind, model: router}
              - name: reply
                route: {on: "{{ steps.kind.output }}", cases: {complaint: refunds}}
            """,
            "policies/both.yaml": """
            upstream_model: m
            steps:
              - {name: a, system: Hold a}
              - {name: b, system: Hold b, input: "{{ input }} again"}
              - {name: joined, system: Summarise both., input: "{{ steps.a.output }} + {{ steps.b.output }}"}
            """,
        }
    )


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)


def _ask(client: openai.OpenAI, model: str, text: str) -> dict:  # type: ignore[type-arg]
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], extra_headers={"x-prefit-steps": "include"}
    )
    return reply.model_dump()


def test_for_each_runs_once_per_entity_within_its_concurrency(client: openai.OpenAI, role: RoleUpstream) -> None:
    role.reset(hold_for=2)
    reply = _ask(client, "sentiment", "Alice loves Paris but Bob hates London, says Carol")
    entities = ["Alice", "Paris", "Bob", "London", "Carol"]
    assert sorted(role.received("Classify")) == sorted(entities)
    assert role.peak == 2  # two at once (the fake holds each until two are in), never more
    steps = reply["prefit_steps"]
    assert steps["extract"]["json"] == {"entities": entities}
    assert steps["classify"]["json"] == ["neutral"] * 5
    assert role.received("Summarise") == ["\n".join(["neutral"] * 5)]
    assert reply["choices"][0]["message"]["content"] == "summary: " + "\n".join(["neutral"] * 5)


def test_an_empty_list_is_a_result(client: openai.OpenAI, role: RoleUpstream) -> None:
    reply = _ask(client, "sentiment", "nobody named here")
    assert role.received("Classify") == []
    assert reply["prefit_steps"]["classify"] == {"output": "", "json": []}
    assert role.received("Summarise") == [""]


def test_for_each_over_a_non_list_names_the_step_and_what_it_got(gateway: GatewayProcess, role: RoleUpstream) -> None:
    body = {"model": "notalist", "messages": [{"role": "user", "content": "Alice is here"}]}
    reply = httpx.post(gateway.url + "/v1/chat/completions", json=body, headers={"x-prefit-steps": "include"})
    assert reply.status_code == 502
    message = reply.json()["error"]["message"]
    assert "step 'classify' failed" in message
    assert 'for_each needs a list, got dict {"entities":["Alice"]}' in message
    assert role.received("Classify") == []
    # the steps that ran before the failure are shown too: where the chain broke
    assert reply.json()["prefit_steps"] == {
        "extract": {"output": '{"entities":["Alice"]}', "json": {"entities": ["Alice"]}}
    }


def test_route_continues_with_the_policy_the_value_picks(client: openai.OpenAI, role: RoleUpstream) -> None:
    complaint = _ask(client, "triage", "I want a refund")
    assert complaint["choices"][0]["message"]["content"] == "summary: I want a refund"
    assert complaint["prefit_steps"]["reply"]["routed"] == "refunds"
    question = _ask(client, "triage", "What are your hours?")
    assert question["prefit_steps"]["reply"]["routed"] == "answers"
    assert role.received("Summarise the refund") == ["I want a refund"]
    assert role.received("Answer") == ["What are your hours?"]


def test_a_routed_last_step_streams(client: openai.OpenAI, role: RoleUpstream) -> None:
    stream = client.chat.completions.create(
        model="triage", messages=[{"role": "user", "content": "refund please"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "summary: refund please"
    assert [body.get("stream") for body in role.requests] == [None, True]


def test_a_value_with_no_case_and_no_default_is_a_502(client: openai.OpenAI, role: RoleUpstream) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        _ask(client, "strict", "What are your hours?")
    assert caught.value.status_code == 502
    assert caught.value.code == "route_unmatched"
    assert "step 'reply' failed: route value 'question' matches no case ('complaint')" in caught.value.message


def test_independent_steps_run_at_once(client: openai.OpenAI, role: RoleUpstream) -> None:
    role.reset(hold_for=2)
    reply = _ask(client, "both", "hi")
    assert role.peak == 2  # a and b read no step, so both were in flight together
    assert reply["choices"][0]["message"]["content"] == "summary: hi + hi again"


def test_steps_are_shown_only_when_asked(client: openai.OpenAI, role: RoleUpstream) -> None:
    reply = client.chat.completions.create(model="triage", messages=[{"role": "user", "content": "hours?"}])
    assert "prefit_steps" not in reply.model_dump()


def test_render_shows_for_each_and_route_with_placeholders(gateway: GatewayProcess) -> None:
    user = [{"role": "user", "content": "Alice is here"}]
    shown = httpx.post(gateway.url + "/v1/render", json={"model": "sentiment", "messages": user}).json()
    classify = shown["steps"][1]
    assert classify["for_each"] == {"over": "{{ steps.extract.json.entities }}", "concurrency": 2}
    assert classify["body"]["messages"][-1]["content"] == "<each item of {{ steps.extract.json.entities }}>"
    assert shown["steps"][2]["body"]["messages"][-1]["content"] == "<output of step classify>"
    routed = httpx.post(gateway.url + "/v1/render", json={"model": "triage", "messages": user}).json()
    route = routed["steps"][1]["route"]
    assert route["on"] == "<output of step kind>"
    assert route["cases"]["complaint"]["policy"] == "refunds"
    assert route["cases"]["complaint"]["body"]["messages"][0]["content"] == "Summarise the refund request."
    assert route["default"]["policy"] == "answers"
    assert routed["body"] == route["default"]["body"]


def test_seeing_steps_needs_an_admin_key_when_there_are_some(start_gateway, roles: RoleUpstream) -> None:  # type: ignore[no-untyped-def]
    gateway = start_gateway(
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {roles.base_url}}}\ndefault_upstream: fake\n"
            "admin_keys: [the-admin]\n",
            "policies/router.yaml": _policy("Route the request."),
            "policies/triage.yaml": "steps:\n  - {name: kind, model: router}\n  - {name: again, model: router}\n",
        }
    )
    body = {"model": "triage", "messages": [{"role": "user", "content": "hours?"}]}
    url, headers = gateway.url + "/v1/chat/completions", {"x-prefit-steps": "include"}
    refused = httpx.post(url, json=body, headers={**headers, "Authorization": "Bearer someone"})
    assert refused.status_code == 403
    assert "x-prefit-steps needs an admin key" in refused.json()["error"]["message"]
    shown = httpx.post(url, json=body, headers={**headers, "Authorization": "Bearer the-admin"})
    assert shown.json()["prefit_steps"]["kind"]["output"] == "question"
