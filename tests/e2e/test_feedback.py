"""Production feedback on real gateways: any replica takes feedback for any request (one Redis),
bad feedback is refused with the reason, and a flood is rate-limited like other calls."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.conftest import GatewayProcess
from tests.fakes.upstream import FakeUpstream

SHARED_REDIS = "redis://127.0.0.1:6379/0"
CHAT = {"messages": [{"role": "user", "content": "where is my parcel?"}]}
POLICIES = {
    "policies/support.yaml": "upstream_model: gpt-4o-mini\ncache: {mode: never}\n"
    "variants:\n  - {name: terse, weight: 50}\n  - {name: plain, weight: 50}\n",
    "policies/rated.yaml": "upstream_model: gpt-4o-mini\ncache: {mode: never}\nfeedback_metrics: [stars]\n",
    "policies/trial.yaml": "upstream_model: gpt-4o-mini\ncache: {mode: never}\n"
    "variants: [{name: a, weight: 1}, {name: b, weight: 1}]\nexperiment: {metric: resolved}\n",
}


def _settings(upstream: FakeUpstream, extra: str = "") -> str:
    return f"upstreams:\n  fake: {{base_url: {upstream.base_url}}}\ndefault_upstream: fake\n{extra}"


def _answer(gateway: GatewayProcess, model: str, user: str = "u1") -> httpx.Response:
    reply = httpx.post(gateway.url + "/v1/chat/completions", json={"model": model, "user": user, **CHAT}, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply


def _feedback(gateway: GatewayProcess, request_id: str, metric: str, value: object) -> httpx.Response:
    body = {"request_id": request_id, "metric": metric, "value": value}
    return httpx.post(gateway.url + "/v1/feedback", json=body, timeout=10)


def forget_keys(prefix: str) -> None:
    """Remove what a test wrote to the shared Redis (request records expire anyway; counts do not)."""
    client = redis.Redis.from_url(SHARED_REDIS)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def replicas(start_gateway, fake_upstream: FakeUpstream) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:  # type: ignore[no-untyped-def]
    prefix = f"prefit-test-{uuid.uuid4().hex[:8]}:"
    files = {"prefit.yaml": _settings(fake_upstream, f"redis_url: {SHARED_REDIS}\nredis: {{key_prefix: '{prefix}'}}\n")}
    yield start_gateway({**files, **POLICIES}), start_gateway({**files, **POLICIES})
    forget_keys(prefix)


def test_feedback_reaches_a_replica_other_than_the_one_that_answered(
    replicas: tuple[GatewayProcess, GatewayProcess],
) -> None:
    first, second = replicas
    reply = _answer(first, "support")
    request_id, variant = reply.headers["x-prefit-request-id"], reply.headers["x-prefit-variant"]
    assert _feedback(second, request_id, "thumbs_up", True).status_code == 204
    assert _feedback(second, request_id, "rating", 4.5).status_code == 204
    assert _feedback(second, request_id, "rating", 3).status_code == 204
    scraped = second.metrics()
    labels = f'metric="thumbs_up",policy="support",variant="{variant}"'
    assert f"prefit_feedback_total{{{labels}}} 1.0" in scraped
    assert f'prefit_feedback_value_sum{{metric="rating",policy="support",variant="{variant}"}} 7.5' in scraped
    assert "prefit_feedback_total{" not in first.metrics()


def test_unknown_request_ids_are_404(replicas: tuple[GatewayProcess, GatewayProcess]) -> None:
    reply = _feedback(replicas[0], "no-such-request", "thumbs_up", True)
    assert reply.status_code == 404
    assert reply.json()["error"]["param"] == "request_id"


def test_feedback_on_a_passthrough_request_is_refused_with_the_reason(
    replicas: tuple[GatewayProcess, GatewayProcess],
) -> None:
    reply = _answer(replicas[0], "gpt-4o-mini")
    refused = _feedback(replicas[1], reply.headers["x-prefit-request-id"], "thumbs_up", True)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "feedback_passthrough"
    assert "no policy" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"metric": "Thumbs-Up", "value": True}, "metric"),
        ({"metric": "x" * 41, "value": True}, "metric"),
        ({"metric": "thumbs_up", "value": "yes"}, "value"),
        ({"metric": "thumbs_up"}, "value"),
        ({"metric": "thumbs_up", "value": True, "user": "me"}, "user"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(
    replicas: tuple[GatewayProcess, GatewayProcess], body: dict[str, object], param: str
) -> None:
    request_id = _answer(replicas[0], "support").headers["x-prefit-request-id"]
    reply = httpx.post(replicas[0].url + "/v1/feedback", json={"request_id": request_id, **body}, timeout=10)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param


def test_a_policy_takes_only_the_metrics_it_lists(replicas: tuple[GatewayProcess, GatewayProcess]) -> None:
    request_id = _answer(replicas[0], "rated").headers["x-prefit-request-id"]
    assert _feedback(replicas[0], request_id, "stars", 5).status_code == 204
    refused = _feedback(replicas[0], request_id, "thumbs_up", True)
    assert refused.status_code == 400
    assert "stars" in refused.json()["error"]["message"]


def test_without_a_list_a_policy_takes_a_bounded_number_of_metric_names(
    start_gateway,  # type: ignore[no-untyped-def]
    fake_upstream: FakeUpstream,
) -> None:
    gateway = start_gateway({"prefit.yaml": _settings(fake_upstream, "feedback: {max_metrics: 2}\n"), **POLICIES})
    request_id = _answer(gateway, "support").headers["x-prefit-request-id"]
    assert _feedback(gateway, request_id, "a", 1).status_code == 204
    assert _feedback(gateway, request_id, "b", 1).status_code == 204
    assert _feedback(gateway, request_id, "a", 1).status_code == 204
    assert _feedback(gateway, request_id, "c", 1).status_code == 400
    assert len(re.findall(r"^prefit_feedback_total\{", gateway.metrics(), re.MULTILINE)) == 2


def test_a_flood_of_feedback_is_rate_limited_and_keys_are_required(
    start_gateway,  # type: ignore[no-untyped-def]
    fake_upstream: FakeUpstream,
) -> None:
    extra = "keys: [gw-key-1]\nrate_limits: {per_key: {requests_per_minute: 4}}\n"
    gateway = start_gateway({"prefit.yaml": _settings(fake_upstream, extra), **POLICIES})
    auth = {"authorization": "Bearer gw-key-1"}
    body = {"model": "support", **CHAT}
    reply = httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=auth, timeout=10)
    feedback = {"request_id": reply.headers["x-prefit-request-id"], "metric": "thumbs_up", "value": True}
    assert httpx.post(gateway.url + "/v1/feedback", json=feedback, timeout=10).status_code == 401
    statuses = [
        httpx.post(gateway.url + "/v1/feedback", json=feedback, headers=auth, timeout=10).status_code for _ in range(4)
    ]
    assert statuses == [204, 204, 204, 429]


def test_a_number_on_an_experiment_metric_without_threshold_is_refused(
    replicas: tuple[GatewayProcess, GatewayProcess],
) -> None:
    request_id = _answer(replicas[0], "trial").headers["x-prefit-request-id"]
    refused = _feedback(replicas[1], request_id, "resolved", 0.7)
    assert refused.status_code == 400
    assert "threshold" in refused.json()["error"]["message"]
    assert _feedback(replicas[1], request_id, "resolved", True).status_code == 204
