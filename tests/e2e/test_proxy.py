"""The core gateway, end to end: real ``prefit serve``, the fake upstream on a socket, the openai SDK."""

from __future__ import annotations

import asyncio

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import UPSTREAM_KEY, GatewayProcess, free_port
from tests.fakes.upstream import FakeUpstream


@pytest.fixture(scope="module")
def gateway(start_gateway, fake_upstream: FakeUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(
        {
            "prefit.yaml": f"""
            upstreams:
              fake: {{base_url: {fake_upstream.base_url}, api_key: ${{FAKE_KEY:-{UPSTREAM_KEY}}}, timeout_s: 10,
                      headers: {{x-org: acme}}}}
              tight: {{base_url: {fake_upstream.base_url}, api_key: {UPSTREAM_KEY}, timeout_s: 1}}
              dead: {{base_url: "http://127.0.0.1:{free_port()}/v1", api_key: {UPSTREAM_KEY}, connect_timeout_s: 2}}
            default_upstream: fake
            max_body_bytes: 20000
            cache: {{enabled: false}}
            """,
            "policies/support-bot.yaml": """
            upstream: fake
            upstream_model: gpt-4o-mini
            params: {temperature: 0, max_tokens: 50}
            """,
            "policies/unreachable.yaml": "upstream: dead\nupstream_model: gpt-4o-mini\n",
            "policies/slow.yaml": "upstream: tight\nupstream_model: fake-slow\n",
            "policies/broken-stream.yaml": "upstream_model: fake-break\n",
            "policies/held.yaml": "upstream_model: fake-hold\n",
            "policies/stream-error.yaml": "upstream_model: fake-stream-error\n",
            "policies/leaky.yaml": "upstream_model: fake-leak\n",
            "policies/failing.yaml": "upstream_model: fake-500\n",
            "policies/refusing.yaml": "upstream_model: fake-400\n",
        }
    )


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-key-never-forwarded", max_retries=0)


@pytest.fixture
def aclient(gateway: GatewayProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="client-key-never-forwarded", max_retries=0)


USER = [{"role": "user", "content": "where is my parcel"}]


# -- routing and params -----------------------------------------------------------------------


def test_policy_maps_model_and_params_and_client_values_win(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="support-bot", messages=USER, max_tokens=7, extra_body={"custom_field": {"kept": True}}
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "echo: where is my parcel"
    sent = upstream.last("/v1/chat/completions")
    assert sent.body == {
        "model": "gpt-4o-mini",
        "messages": USER,
        "max_tokens": 7,
        "temperature": 0,
        "custom_field": {"kept": True},
    }
    assert raw.headers["x-prefit-policy"] == "support-bot"
    assert raw.headers["x-prefit-variant"] == "default"
    assert raw.headers["x-prefit-prompt-version"] == "none"
    assert raw.headers["x-prefit-upstream"] == "fake"
    assert raw.headers["x-prefit-request-id"] == sent.headers["x-request-id"]


def test_upstream_key_replaces_client_key_and_extra_headers_are_sent(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    client.chat.completions.create(model="support-bot", messages=USER)
    headers = upstream.last().headers
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert headers["x-org"] == "acme"
    assert "client-key-never-forwarded" not in str(headers)


def test_client_request_id_is_forwarded(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="support-bot", messages=USER, extra_headers={"x-request-id": "trace-42"}
    )
    assert raw.headers["x-prefit-request-id"] == "trace-42"
    assert upstream.last().headers["x-request-id"] == "trace-42"


def test_unknown_model_goes_to_default_upstream_unchanged(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER, temperature=0.3)
    assert raw.parse().model == "gpt-4o"
    assert upstream.last("/v1/chat/completions").body == {"model": "gpt-4o", "messages": USER, "temperature": 0.3}
    assert raw.headers["x-prefit-policy"] == "passthrough"


async def test_async_client_non_stream(aclient: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    replies = await asyncio.gather(
        *[
            aclient.chat.completions.create(model="support-bot", messages=[{"role": "user", "content": f"n{i}"}])
            for i in range(8)
        ]
    )
    assert sorted(r.choices[0].message.content or "" for r in replies) == [f"echo: n{i}" for i in range(8)]


# -- streaming --------------------------------------------------------------------------------


def test_stream_passes_chunks_and_usage(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="support-bot", messages=USER, stream=True, stream_options={"include_usage": True}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["x-prefit-policy"] == "support-bot"
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: where is my parcel"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert upstream.last().body["stream"] is True


async def test_async_stream(aclient: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    stream = await aclient.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream]
    assert "".join(parts) == "echo: where is my parcel"


def test_failure_after_stream_began_ends_with_error_event(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    for model in ("broken-stream", "stream-error"):
        stream = client.chat.completions.create(model=model, messages=USER, stream=True)
        received = []
        with pytest.raises(openai.APIError) as caught:
            for chunk in stream:
                received.append(chunk)
        assert received, "the chunks before the failure reach the client"
        assert caught.value.body is not None


def test_client_disconnect_cancels_upstream(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        timeout=10,
        json={"model": "held", "messages": USER, "stream": True},
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert upstream.hold_started.wait(5)
    assert upstream.cancelled.wait(10), "the upstream request was not cancelled after the client left"


# -- other endpoints --------------------------------------------------------------------------


def test_completions_and_embeddings_route_through_policies(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    completion = client.completions.create(model="support-bot", prompt="say hi")
    assert completion.choices[0].text == "completed: say hi"
    assert upstream.last("/v1/completions").body == {
        "model": "gpt-4o-mini",
        "prompt": "say hi",
        "temperature": 0,
        "max_tokens": 50,
    }
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="x", prompt="p", stream=True))
    assert streamed == "done streaming"
    embedding = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(embedding.data) == 2 and embedding.usage.prompt_tokens == 4


def test_models_lists_policies_and_upstream_models(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert "support-bot" in ids and "gpt-4o-mini" in ids and "text-embedding-3-small" in ids
    assert ids.index("support-bot") < ids.index("gpt-4o")


def test_other_paths_forwarded_with_method_query_and_body(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    reply = httpx.get(gateway.url + "/v1/files?limit=2&order=asc", headers={"Authorization": "Bearer c"})
    assert reply.status_code == 200
    assert reply.json() == {"method": "GET", "path": "/v1/files", "query": "limit=2&order=asc", "body": None}
    assert reply.headers["x-upstream-header"] == "kept"
    assert "set-cookie" not in reply.headers
    assert upstream.last().headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    deleted = httpx.request("DELETE", gateway.url + "/v1/files/file-1", json={"why": "test"})
    assert deleted.json()["method"] == "DELETE" and deleted.json()["body"] == {"why": "test"}


def test_responses_api_passthrough_plain_and_streamed(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    response = client.responses.create(model="gpt-4o-mini", input="hello")
    assert response.output_text == "responded: hello"
    events = list(client.responses.create(model="gpt-4o-mini", input="hi", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "responded: hi"
    assert upstream.last("/v1/responses").body == {"model": "gpt-4o-mini", "input": "hi", "stream": True}


def test_health_ready_metrics(gateway: GatewayProcess) -> None:
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert "prefit_requests_total" in gateway.metrics()


# -- bad input and upstream faults ------------------------------------------------------------


def _post(gateway: GatewayProcess, content: bytes) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions", content=content, headers={"content-type": "application/json"}, timeout=10
    )


def test_invalid_json_is_400(gateway: GatewayProcess) -> None:
    reply = _post(gateway, b'{"model": "support-bot", "messages": [')
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert reply.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": 5, "messages": []}', "model"),
        (b'{"model": "support-bot", "messages": "hi"}', "messages"),
        (b'{"model": "support-bot", "messages": [{"role": 1, "content": "x"}]}', "messages[0].role"),
        (b'{"messages": []}', "model"),
    ],
)
def test_wrong_types_are_400_naming_param(gateway: GatewayProcess, body: bytes, param: str) -> None:
    reply = _post(gateway, body)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == param


def test_body_over_limit_is_413(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="support-bot", messages=[{"role": "user", "content": "x" * 30000}])
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "request_too_large"  # type: ignore[index]
    assert not upstream.requests


def test_upstream_unreachable_is_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="unreachable", messages=USER)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_unreachable"  # type: ignore[index]


def test_upstream_timeout_is_504_within_deadline(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.with_options(timeout=4).chat.completions.create(model="slow", messages=USER)
    assert caught.value.status_code == 504
    assert caught.value.body["code"] == "upstream_timeout"  # type: ignore[index]


def test_upstream_errors_pass_through_with_status_and_body(client: openai.OpenAI) -> None:
    for model, status, error in (
        ("failing", 500, openai.InternalServerError),
        ("refusing", 400, openai.BadRequestError),
    ):
        with pytest.raises(error) as caught:
            client.chat.completions.create(model=model, messages=USER)
        assert caught.value.status_code == status
        assert caught.value.message.endswith(f"scripted {status}")
        assert caught.value.response.headers["x-prefit-policy"] == model


def test_streamed_request_failing_before_first_chunk_gets_real_status(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="failing", messages=USER, stream=True)


def test_upstream_key_never_leaks(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="leaky", messages=USER)
    assert UPSTREAM_KEY not in caught.value.response.text
    assert "[redacted]" in caught.value.response.text
    assert UPSTREAM_KEY not in httpx.get(gateway.url + "/v1/models").text
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="unreachable", messages=USER)
    assert UPSTREAM_KEY not in gateway.log
    assert UPSTREAM_KEY not in gateway.metrics()


def test_forwarded_body_is_scrubbed_across_chunks(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    with httpx.stream("POST", gateway.url + "/v1/files", json={"model": "fake-leak-split"}, timeout=10) as reply:
        assert reply.status_code == 401
        parts = reply.iter_raw()
        received = next(parts)  # the first chunk has arrived, so the rest is a second chunk
        upstream.release()
        received += b"".join(parts)
    assert UPSTREAM_KEY.encode() not in received
    assert orjson.loads(received)["error"]["message"] == "bad key: Bearer [redacted]"


def test_streaming_embeddings_is_the_clients_mistake(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input="a", extra_body={"stream": True})
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error" and error["param"] == "stream"
    assert "stream" in error["message"]
    assert not [r for r in upstream.requests if r.path == "/v1/embeddings"]
    assert client.embeddings.create(model="text-embedding-3-small", input="a", extra_body={"stream": False}).data


# -- observability ----------------------------------------------------------------------------


def test_metrics_follow_the_contract(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    client.chat.completions.create(model="support-bot", messages=USER)
    list(
        client.chat.completions.create(
            model="support-bot", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="unreachable", messages=USER)
    client.chat.completions.create(model="client-invented-name", messages=USER)
    text = gateway.metrics()
    assert (
        'prefit_requests_total{model="gpt-4o-mini",policy="support-bot",prompt_version="none",'
        'status="200",upstream="fake",variant="default"}'
    ) in text
    assert 'policy="unreachable",prompt_version="none",status="502",upstream="dead"' in text
    assert 'model="other",policy="passthrough"' in text
    assert 'prefit_request_duration_seconds_count{policy="support-bot",variant="default"}' in text
    assert 'prefit_time_to_first_token_seconds_count{policy="support-bot",variant="default"}' in text
    assert 'prefit_upstream_duration_seconds_count{upstream="fake"}' in text
    assert 'prefit_tokens_total{kind="completion",policy="support-bot",variant="default"}' in text
    assert 'prefit_upstream_errors_total{reason="connect",upstream="dead"}' in text
    assert "client-invented-name" not in text


def test_render_and_model_listing_are_counted_as_what_they_are(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    rendered = httpx.post(gateway.url + "/v1/render", json={"model": "support-bot", "messages": USER}, timeout=10)
    assert rendered.status_code == 200
    client.models.list()
    requests = [
        sample
        for family in text_string_to_metric_families(gateway.metrics())
        for sample in family.samples
        if sample.name == "prefit_requests_total"
    ]

    def count(**labels: str) -> float:
        return sum(s.value for s in requests if all(s.labels[k] == v for k, v in labels.items()))

    # render sends nothing: the policy and variant it rendered, but no upstream or upstream model
    assert count(policy="support-bot", variant="default", upstream="none", model="none", status="200") == 1
    assert count(policy="models", variant="none", upstream="none", model="none", status="200") >= 1
    assert count(policy="none", status="200") == 0, "every successful request is labelled with what it was"


def test_one_access_log_line_per_request_without_prompt_text(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="support-bot", messages=[{"role": "user", "content": "a very private question"}]
    )
    request_id = raw.headers["x-prefit-request-id"]
    for _ in range(100):
        lines = [r for r in gateway.records() if r.get("request_id") == request_id]
        if lines:
            break
        httpx.get(gateway.url + "/healthz")
    assert len(lines) == 1
    line = lines[0]
    assert line["status"] == 200 and line["policy"] == "support-bot" and line["model"] == "gpt-4o-mini"
    assert line["prompt_tokens"] > 0
    assert "private question" not in gateway.log


@pytest.mark.parametrize("path", ["/v1/%2E%2E/%2E%2E/admin/secret", "/v1/files/%2e%2e/x", "/v1/a%2Fb"])
def test_passthrough_cannot_leave_the_upstream_base(gateway: GatewayProcess, upstream: FakeUpstream, path: str) -> None:
    reply = httpx.get(gateway.url + path)
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "not_found"
    assert not upstream.requests or all(r.path != "/admin/secret" for r in upstream.requests)


def test_own_endpoints_with_another_method_are_405(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    for method, path in (("GET", "/v1/chat/completions"), ("POST", "/v1/chat/completions/")):
        reply = httpx.request(method, gateway.url + path, json={"model": "x", "messages": []})
        assert reply.status_code == 405
        assert reply.json()["error"]["code"] == "method_not_allowed"
    assert not [r for r in upstream.requests if r.path.startswith("/v1/chat")]
