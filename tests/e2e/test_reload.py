"""Hot reload through real file changes and SIGHUP, with a request in flight."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayProcess, wait_for
from tests.fakes.upstream import FakeUpstream

POLICY = "upstream_model: fake-hold\nprompt: {{version: {version}, system: Prompt {version}.}}\n"


def _render(gateway: GatewayProcess, **headers: str) -> httpx.Response:
    body = {"model": "live", "messages": [{"role": "user", "content": "x"}]}
    return httpx.post(gateway.url + "/v1/render", json=body, headers=headers, timeout=10)


def _version(gateway: GatewayProcess) -> str | None:
    reply = _render(gateway)
    return reply.json().get("prompt_version") if reply.status_code == 200 else None


@pytest.fixture
def gateway(start_gateway, fake_upstream: FakeUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {fake_upstream.base_url}}}\ndefault_upstream: fake\n",
            "policies/live.yaml": POLICY.format(version="v1"),
        }
    )


def test_file_change_swaps_policies_while_in_flight_requests_finish(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    policy = gateway.workdir / "policies" / "live.yaml"
    body = {"model": "live", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=30) as in_flight:
        assert in_flight.headers["x-prefit-prompt-version"] == "v1"
        lines = in_flight.iter_lines()
        assert next(lines).startswith("data: ")
        assert upstream.hold_started.wait(10)
        policy.write_text(POLICY.format(version="v2"))
        wait_for(lambda: _version(gateway) == "v2", "the v2 policy to be served")
        upstream.release()
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"
    assert not any('"error"' in line for line in rest)
    assert upstream.last("/v1/chat/completions").body["messages"][0]["content"] == "Prompt v1."
    assert 'prefit_config_reloads_total{result="success"}' in gateway.metrics()


def test_invalid_change_keeps_the_last_good_set(gateway: GatewayProcess) -> None:
    policy = gateway.workdir / "policies" / "live.yaml"
    policy.write_text("upstream_model: fake-hold\nprompt: {version: v2, system: 'broken {{'}\n")
    wait_for(lambda: not httpx.get(gateway.url + "/readyz").json()["last_reload"]["ok"], "the failed reload")
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200
    errors = ready.json()["last_reload"]["errors"]
    assert errors == ["policies/live.yaml:2:31: prompt.system: template syntax error: unexpected 'end of template'"]
    assert _version(gateway) == "v1"
    assert 'prefit_config_reloads_total{result="error"}' in gateway.metrics()
    assert "reload rejected: policies/live.yaml:2:31" in gateway.log
    policy.write_text(POLICY.format(version="v3"))
    wait_for(lambda: _version(gateway) == "v3", "recovery after a fixed file")
    assert httpx.get(gateway.url + "/readyz").json()["last_reload"]["ok"]


def test_settings_change_applies_new_keys(gateway: GatewayProcess, fake_upstream: FakeUpstream) -> None:
    settings = gateway.workdir / "prefit.yaml"
    settings.write_text(settings.read_text() + "keys: [fresh-key]\n")
    wait_for(lambda: _render(gateway).status_code == 401, "the new keys to apply")
    assert _render(gateway, Authorization="Bearer fresh-key").status_code == 200


def test_sighup_reloads_without_a_watcher(start_gateway, fake_upstream: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    gateway = start_gateway(
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {fake_upstream.base_url}}}\ndefault_upstream: fake\n"
            "reload: false\n",
            "policies/live.yaml": POLICY.format(version="v1"),
        }
    )
    Path(gateway.workdir / "policies" / "live.yaml").write_text(POLICY.format(version="v2"))
    assert _version(gateway) == "v1"
    gateway.process.send_signal(signal.SIGHUP)
    wait_for(lambda: _version(gateway) == "v2", "the SIGHUP reload")
