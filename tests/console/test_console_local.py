"""With no admin keys the console is for loopback clients only, still with CSRF-checked POSTs."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import GatewayProcess
from tests.console.helpers import console_files, page_token
from tests.fakes.upstream import FakeUpstream

ASK = {"policy": "ab", "variant": "control", "message": "hello"}


@pytest.fixture(scope="module")
def gateway(start_gateway, fake_upstream: FakeUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(console_files(fake_upstream.base_url, admin=False))


def test_loopback_clients_get_a_session_without_logging_in(gateway: GatewayProcess) -> None:
    client = httpx.Client(base_url=gateway.url, timeout=10)
    reply = client.get("/console")
    assert reply.status_code == 200
    assert "prefit_console=" in reply.headers["set-cookie"]
    assert "Log out" not in reply.text
    assert client.get("/console/login", follow_redirects=False).status_code == 303


def test_a_proxied_request_is_not_local(gateway: GatewayProcess) -> None:
    reply = httpx.get(gateway.url + "/console", headers={"x-forwarded-for": "203.0.113.9"})
    assert reply.status_code == 403
    assert "only to local clients" in reply.text
    assert (
        httpx.post(gateway.url + "/console/api/render", json=ASK, headers={"forwarded": "for=1.2.3.4"}).status_code
        == 403
    )


def test_posts_still_need_the_csrf_token(gateway: GatewayProcess) -> None:
    assert httpx.post(gateway.url + "/console/api/render", json=ASK).status_code == 403
    client = httpx.Client(base_url=gateway.url, timeout=10)
    token = page_token(client.get("/console/playground").text)
    assert client.post("/console/api/render", json=ASK).status_code == 403
    reply = client.post("/console/api/render", json=ASK, headers={"x-csrf-token": token})
    assert reply.status_code == 200


def test_playground_render_equals_v1_render(gateway: GatewayProcess) -> None:
    client = httpx.Client(base_url=gateway.url, timeout=10)
    token = page_token(client.get("/console/playground").text)
    ours = client.post("/console/api/render", json=ASK, headers={"x-csrf-token": token}).json()
    direct = httpx.post(
        gateway.url + "/v1/render",
        json={"model": "ab", "messages": [{"role": "user", "content": "hello"}], "stream": False},
        headers={"x-prefit-variant": "control"},
    )
    assert direct.status_code == 200
    assert ours["body"] == direct.json()
    assert ours["body"]["body"]["messages"][0]["content"] == "You help Acme customers.\nBe brief."
