"""Gateway keys, the metrics key, no default upstream, and a model list that survives its upstream."""

from __future__ import annotations

import hashlib

import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEY, GatewayProcess
from tests.fakes.upstream import FakeUpstream

HASHED = "sha256:" + hashlib.sha256(b"team-key-2").hexdigest()


@pytest.fixture(scope="module")
def locked(start_gateway, fake_upstream: FakeUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(
        {
            "prefit.yaml": f"""
            upstreams:
              fake: {{base_url: {fake_upstream.base_url}, api_key: {UPSTREAM_KEY}}}
            default_upstream: null
            keys: [team-key-1, "{HASHED}"]
            metrics_key: scrape-key
            admin_keys: [admin-only-key]
            """,
            "policies/bot.yaml": "upstream: fake\nupstream_model: gpt-4o-mini\n",
        }
    )


def _client(gateway: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def test_keys_plain_and_hashed(locked: GatewayProcess, upstream: FakeUpstream) -> None:
    for key in ("team-key-1", "team-key-2"):
        reply = _client(locked, key).chat.completions.create(model="bot", messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content == "echo: x"
    assert upstream.last().headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_wrong_or_missing_key_is_401_in_openai_shape(locked: GatewayProcess, upstream: FakeUpstream) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        _client(locked, "wrong").chat.completions.create(model="bot", messages=[])
    assert caught.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    bare = httpx.post(locked.url + "/v1/chat/completions", json={"model": "bot", "messages": []})
    assert bare.status_code == 401
    assert bare.json()["error"]["type"] == "authentication_error"
    assert not [r for r in upstream.requests if r.path == "/v1/chat/completions"]


def test_no_default_upstream_means_model_not_found(locked: GatewayProcess) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        _client(locked, "team-key-1").chat.completions.create(model="gpt-4o", messages=[])
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert caught.value.body["param"] == "model"  # type: ignore[index]


def test_metrics_key(locked: GatewayProcess) -> None:
    assert httpx.get(locked.url + "/metrics").status_code == 401
    assert httpx.get(locked.url + "/metrics", headers={"Authorization": "Bearer team-key-1"}).status_code == 401
    assert "prefit_requests_total" in locked.metrics("scrape-key")
    assert httpx.get(locked.url + "/healthz").status_code == 200


def test_models_survive_a_failing_upstream_list(start_gateway, fake_upstream: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    fake_upstream.reset()
    fake_upstream.fail_models_list = True
    gateway = start_gateway(
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {fake_upstream.base_url}}}\ndefault_upstream: fake\n",
            "policies/bot.yaml": "upstream_model: gpt-4o-mini\n",
        }
    )
    reply = httpx.get(gateway.url + "/v1/models")
    assert reply.status_code == 200
    assert [m["id"] for m in reply.json()["data"]] == ["bot"]
    fake_upstream.fail_models_list = False


def test_warns_when_open_on_a_non_loopback_address(start_gateway, fake_upstream: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    gateway = start_gateway(
        {"prefit.yaml": f"upstreams:\n  fake: {{base_url: {fake_upstream.base_url}}}\ndefault_upstream: fake\n"},
        "--host",
        "0.0.0.0",
    )
    assert "no gateway keys are configured and 0.0.0.0 is not a loopback address" in gateway.log


def test_bad_config_stops_serve_with_file_and_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    (tmp_path / "prefit.yaml").write_text("upstreams:\n  x: {base_url: http://127.0.0.1:1/v1, tmeout_s: 3}\n")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "prefit.yaml:2:40: upstreams.x.tmeout_s: unknown key" in done.stderr


def test_an_admin_key_opens_the_api_and_may_pin_variants(locked: GatewayProcess, upstream: FakeUpstream) -> None:
    reply = httpx.post(
        locked.url + "/v1/chat/completions",
        json={"model": "bot", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": "Bearer admin-only-key", "x-prefit-variant": "default"},
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-prefit-variant"] == "default"
    refused = httpx.post(
        locked.url + "/v1/chat/completions",
        json={"model": "bot", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": "Bearer team-key-1", "x-prefit-variant": "default"},
    )
    assert refused.status_code == 403


def test_loopback_behind_a_proxy_may_not_pin_variants(start_gateway, fake_upstream: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    """With no admin keys, only a local caller may pin; a proxy on this host is not one."""
    gateway = start_gateway(
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {fake_upstream.base_url}}}\ndefault_upstream: fake\n",
            "policies/bot.yaml": "upstream_model: gpt-4o-mini\n",
        }
    )
    body = {"model": "bot", "messages": [{"role": "user", "content": "x"}]}
    direct = httpx.post(gateway.url + "/v1/chat/completions", json=body, headers={"x-prefit-variant": "default"})
    assert direct.status_code == 200, direct.text
    proxied = httpx.post(
        gateway.url + "/v1/chat/completions",
        json=body,
        headers={"x-prefit-variant": "default", "x-forwarded-for": "203.0.113.9"},
    )
    assert proxied.status_code == 403
    assert proxied.json()["error"]["code"] == "permission_denied"
