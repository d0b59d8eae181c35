"""``/readyz`` says which upstream cannot be called, and is 503 while one that is used has no key.

An ``api_key: ${VAR}`` whose variable is unset is valid YAML and only warns at start-up; without
this the gateway would look ready and its first call would fail with the provider's 401.
"""

from __future__ import annotations

import httpx

from tests.fakes.upstream import FakeUpstream

UNSET = "PREFIT_TEST_KEY_THAT_IS_NEVER_SET"


def _settings(upstream: FakeUpstream, default: str) -> str:
    return (
        "upstreams:\n"
        f"  openai: {{base_url: https://api.openai.com/v1, api_key: ${{{UNSET}}}}}\n"
        f"  local: {{base_url: {upstream.base_url}}}\n"
        f"default_upstream: {default}\n"
    )


def test_a_used_upstream_without_its_key_is_not_ready(start_gateway, fake_upstream: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    gateway = start_gateway({"prefit.yaml": _settings(fake_upstream, "openai")})
    ready = httpx.get(gateway.url + "/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["upstreams"] == {"openai": f"no api_key ({UNSET} is unset)", "local": "ok"}
    assert f"upstream 'openai' has no api_key ({UNSET} is unset)" in gateway.log


def test_a_keyless_local_upstream_is_ready(start_gateway, fake_upstream: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    gateway = start_gateway({"prefit.yaml": _settings(fake_upstream, "local")})
    ready = httpx.get(gateway.url + "/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert ready.json()["upstreams"] == {"openai": f"no api_key ({UNSET} is unset); unused", "local": "ok"}
