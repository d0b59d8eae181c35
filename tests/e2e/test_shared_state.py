"""Cache and rate limits on a real Redis: shared by replicas, and harmless when Redis dies."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import GatewayProcess, free_port, wait_for
from tests.fakes.upstream import FakeUpstream

SHARED_REDIS = "redis://127.0.0.1:6379/0"
USER = [{"role": "user", "content": "what is the refund window?"}]


def _settings(upstream: FakeUpstream, redis_url: str, prefix: str, extra: str = "") -> str:
    return (
        f"upstreams:\n  fake: {{base_url: {upstream.base_url}}}\ndefault_upstream: fake\n"
        f"redis_url: {redis_url}\nredis: {{key_prefix: '{prefix}', timeout_s: 0.2, down_for_s: 0.5}}\n{extra}"
    )


POLICIES = {
    "policies/faq.yaml": "upstream_model: gpt-4o-mini\nparams: {temperature: 0}\ncache: {ttl_s: 60}\n",
    "policies/short-lived.yaml": "upstream_model: gpt-4o-mini\n"
    "params: {temperature: 0, max_tokens: 77}\ncache: {ttl_s: 0.3}\n",
    "policies/creative.yaml": "upstream_model: gpt-4o-mini\nparams: {temperature: 0.9}\n",
    "policies/limited.yaml": "upstream_model: gpt-4o-mini\n"
    "rate_limit: {requests_per_minute: 5}\ncache: {mode: never}\n",
}


@pytest.fixture
def prefix() -> str:
    return f"prefit-test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def replicas(start_gateway, fake_upstream: FakeUpstream, prefix: str) -> tuple[GatewayProcess, GatewayProcess]:  # type: ignore[no-untyped-def]
    files = {"prefit.yaml": _settings(fake_upstream, SHARED_REDIS, prefix), **POLICIES}
    return start_gateway(files), start_gateway(files)


def _client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)


def _cache_header(gateway: GatewayProcess, model: str, **extra: object) -> str | None:
    raw = _client(gateway).chat.completions.with_raw_response.create(model=model, messages=USER, **extra)  # type: ignore[call-overload]
    return raw.headers.get("x-prefit-cache")


def test_cache_hit_is_shared_across_replicas(
    replicas: tuple[GatewayProcess, GatewayProcess], upstream: FakeUpstream
) -> None:
    first, second = replicas
    assert _cache_header(first, "faq") == "miss"
    assert _cache_header(second, "faq") == "hit"
    assert _cache_header(first, "faq") == "hit"
    assert len([r for r in upstream.requests if r.path == "/v1/chat/completions"]) == 1
    assert 'prefit_cache_requests_total{result="hit"} 1.0' in second.metrics()


def test_cache_bypass_nondeterministic_and_expiry(
    replicas: tuple[GatewayProcess, GatewayProcess], upstream: FakeUpstream
) -> None:
    gateway = replicas[0]
    assert _cache_header(gateway, "faq") == "miss"
    assert _cache_header(gateway, "faq", extra_headers={"Cache-Control": "no-cache"}) == "bypass"
    assert _cache_header(gateway, "creative") is None
    assert _cache_header(gateway, "short-lived") == "miss"
    wait_for(lambda: _cache_header(gateway, "short-lived") == "miss", "the entry to expire")


def test_streamed_answer_is_replayed_from_the_cache(
    replicas: tuple[GatewayProcess, GatewayProcess], upstream: FakeUpstream
) -> None:
    texts = []
    for gateway in replicas:
        with _client(gateway).chat.completions.with_streaming_response.create(
            model="faq", messages=USER, stream=True
        ) as response:
            texts.append(
                (
                    response.headers["x-prefit-cache"],
                    "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices),
                )
            )
    assert texts == [("miss", "echo: what is the refund window?"), ("hit", "echo: what is the refund window?")]
    assert len([r for r in upstream.requests if r.path == "/v1/chat/completions"]) == 1


def test_rate_limit_is_shared_by_two_gateways(replicas: tuple[GatewayProcess, GatewayProcess]) -> None:
    first, second = replicas
    for index in range(5):
        _client((first, second)[index % 2]).chat.completions.create(model="limited", messages=USER)
    with pytest.raises(openai.RateLimitError) as caught:
        _client(second).chat.completions.create(model="limited", messages=USER)
    assert caught.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert 'prefit_rate_limited_total{policy="limited"} 1.0' in second.metrics()


def test_token_limit_per_key(start_gateway, fake_upstream: FakeUpstream, prefix: str) -> None:  # type: ignore[no-untyped-def]
    extra = "keys: [alpha, beta]\nrate_limits: {per_key: {tokens_per_minute: 10}}\ncache: {enabled: false}\n"
    gateway = start_gateway({"prefit.yaml": _settings(fake_upstream, SHARED_REDIS, prefix, extra), **POLICIES})
    alpha = openai.OpenAI(base_url=gateway.url + "/v1", api_key="alpha", max_retries=0)
    alpha.chat.completions.create(model="faq", messages=USER)  # about 13 tokens: over the budget

    def refused() -> bool:
        try:
            alpha.chat.completions.create(model="faq", messages=USER)
        except openai.RateLimitError:
            return True
        return False

    wait_for(refused, "the token budget to be exhausted")
    beta = openai.OpenAI(base_url=gateway.url + "/v1", api_key="beta", max_retries=0)
    assert beta.chat.completions.create(model="faq", messages=USER).choices


# -- a private Redis that dies mid-run --------------------------------------------------------


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(answers, "redis-server to listen")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (scripts/test installs it)")
    redis = PrivateRedis()
    redis.start()
    yield redis
    redis.stop()


@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_gateway_keeps_serving_when_redis_dies(
    start_gateway,
    fake_upstream: FakeUpstream,  # type: ignore[no-untyped-def]
    private_redis: PrivateRedis,
    on_error: str,
) -> None:
    extra = f"rate_limits: {{per_key: {{requests_per_minute: 1000}}, on_backend_error: {on_error}}}\n"
    gateway = start_gateway({"prefit.yaml": _settings(fake_upstream, private_redis.url, "p:", extra), **POLICIES})
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0, timeout=10)
    assert _cache_header(gateway, "faq") == "miss"
    assert _cache_header(gateway, "faq") == "hit"
    private_redis.stop()
    if on_error == "open":
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(model="faq", messages=USER)
            assert raw.parse().choices[0].message.content == "echo: what is the refund window?"
        ready = httpx.get(gateway.url + "/readyz").json()
        assert ready["redis"] == "unreachable"
    else:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="faq", messages=USER)
        assert caught.value.status_code == 503
    assert 'prefit_state_errors_total{backend="redis"' in gateway.metrics()
    private_redis.start()

    def cached_again() -> bool:
        try:
            return _cache_header(gateway, "faq") == "hit"
        except openai.APIStatusError:
            return False

    wait_for(cached_again, "the gateway to reconnect and cache through Redis again")
