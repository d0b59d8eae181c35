"""Upstream faults end in their documented behaviour: retries, Retry-After, fallbacks, breakers, stream drops."""

from __future__ import annotations

import time

import openai
import pytest

from tests.conftest import GatewayProcess
from tests.fakes.faulty import FaultyUpstream
from tests.fakes.upstream import FakeUpstream

USER = [{"role": "user", "content": "hello"}]


@pytest.fixture
def gateway(start_gateway, faulty_upstream: FaultyUpstream, fake_upstream: FakeUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    faulty_upstream.reset()
    return start_gateway(
        {
            "prefit.yaml": f"""
            upstreams:
              faulty: {{base_url: {faulty_upstream.base_url}, timeout_s: 1, connect_timeout_s: 1}}
              fake: {{base_url: {fake_upstream.base_url}}}
            default_upstream: fake
            cache: {{enabled: false}}
            resilience: {{retries: 2, backoff_s: 0.01, backoff_max_s: 2, breaker_failures: 3, breaker_reset_s: 60,
                          request_deadline_s: 8}}
            """,
            "policies/primary-only.yaml": "upstream: faulty\nupstream_model: m\n",
            "policies/with-fallback.yaml": "upstream: faulty\nupstream_model: m\n"
            "fallbacks: [{upstream: fake, upstream_model: gpt-4o-mini}]\n",
        }
    )


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0, timeout=15)


def test_5xx_is_retried_until_it_succeeds(
    client: openai.OpenAI, faulty_upstream: FaultyUpstream, gateway: GatewayProcess
) -> None:
    faulty_upstream.reset("500", "500", "ok")
    reply = client.chat.completions.create(model="primary-only", messages=USER)
    assert reply.choices[0].message.content == "faulty says ok"
    assert faulty_upstream.connections == 3
    assert 'prefit_upstream_retries_total{reason="status",upstream="faulty"} 2.0' in gateway.metrics()


def test_retries_run_out_and_the_upstream_status_reaches_the_client(
    client: openai.OpenAI, faulty_upstream: FaultyUpstream
) -> None:
    faulty_upstream.reset("500", "500", "500", "ok")
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="primary-only", messages=USER)
    assert caught.value.message.endswith("faulty 500")
    assert faulty_upstream.connections == 3


def test_429_waits_for_retry_after(client: openai.OpenAI, faulty_upstream: FaultyUpstream) -> None:
    faulty_upstream.reset("429", "ok")
    started = time.monotonic()
    reply = client.chat.completions.create(model="primary-only", messages=USER)
    assert reply.choices[0].message.content == "faulty says ok"
    assert faulty_upstream.connections == 2
    assert time.monotonic() - started >= 1.0, "Retry-After: 1 was not honoured"


def test_connection_reset_is_retried(client: openai.OpenAI, faulty_upstream: FaultyUpstream) -> None:
    faulty_upstream.reset("reset", "ok")
    reply = client.chat.completions.create(model="primary-only", messages=USER)
    assert reply.choices[0].message.content == "faulty says ok"
    assert faulty_upstream.connections == 2


def test_slow_first_byte_is_a_504_or_a_fallback(
    client: openai.OpenAI, faulty_upstream: FaultyUpstream, upstream: FakeUpstream
) -> None:
    faulty_upstream.reset("silent")
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="primary-only", messages=USER)
    assert caught.value.status_code == 504
    faulty_upstream.reset("silent")
    raw = client.chat.completions.with_raw_response.create(model="with-fallback", messages=USER)
    assert raw.headers["x-prefit-upstream"] == "fake"
    assert raw.parse().choices[0].message.content == "echo: hello"
    assert upstream.last("/v1/chat/completions").body["model"] == "gpt-4o-mini"


def test_drop_mid_stream_is_reported_in_the_stream_and_not_retried(
    client: openai.OpenAI, faulty_upstream: FaultyUpstream
) -> None:
    faulty_upstream.reset("drop-mid-stream", "ok-stream")
    stream = client.chat.completions.create(model="with-fallback", messages=USER, stream=True)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["faulty"]
    assert faulty_upstream.connections == 1


def test_open_circuit_skips_the_failing_upstream(
    client: openai.OpenAI, faulty_upstream: FaultyUpstream, gateway: GatewayProcess
) -> None:
    faulty_upstream.reset(*["reset"] * 10)
    first = client.chat.completions.with_raw_response.create(model="with-fallback", messages=USER)
    assert first.headers["x-prefit-upstream"] == "fake"
    assert faulty_upstream.connections == 3
    second = client.chat.completions.with_raw_response.create(model="with-fallback", messages=USER)
    assert second.headers["x-prefit-upstream"] == "fake"
    assert faulty_upstream.connections == 3, "an open circuit must not call the upstream"
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="primary-only", messages=USER)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_circuit_open"  # type: ignore[index]
    text = gateway.metrics()
    assert 'prefit_circuit_open{upstream="faulty"} 1.0' in text
    assert 'prefit_upstream_errors_total{reason="circuit_open",upstream="faulty"}' in text


def test_stream_whose_first_event_never_comes_is_a_504(client: openai.OpenAI, faulty_upstream: FaultyUpstream) -> None:
    faulty_upstream.reset("stream-stall")
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="primary-only", messages=USER, stream=True)
    assert caught.value.status_code == 504
    assert caught.value.body["code"] == "upstream_timeout"  # type: ignore[index]


def test_a_trickling_stream_ends_at_the_request_deadline(start_gateway, faulty_upstream: FaultyUpstream) -> None:  # type: ignore[no-untyped-def]
    gateway = start_gateway(
        {
            "prefit.yaml": f"upstreams:\n  faulty: {{base_url: {faulty_upstream.base_url}, timeout_s: 5}}\n"
            "default_upstream: faulty\ncache: {enabled: false}\nresilience: {request_deadline_s: 1.5}\n",
        }
    )
    faulty_upstream.reset("trickle")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0, timeout=15)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model="m", messages=USER, stream=True):
            received.append(chunk)
    assert received, "chunks before the deadline reach the client"
    assert "deadline" in caught.value.message
