"""The console over HTTP against a real gateway process: the admin gate, CSRF, and every page's content."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import GatewayProcess
from tests.console.helpers import (
    ADMIN_KEY,
    GATEWAY_KEY,
    RUN_NAME,
    console_files,
    form_token,
    login,
    page_token,
    wait_for,
)
from tests.fakes.upstream import FakeUpstream

PAGES = [
    "/console",
    "/console/policies/ab",
    "/console/playground",
    "/console/evals",
    f"/console/evals/{RUN_NAME}",
    "/console/stats",
]
APIS = ["/console/api/render", "/console/api/send"]
ASK = {"policy": "ab", "variant": "treatment", "message": "where is my parcel?"}


@pytest.fixture(scope="module")
def gateway(start_gateway, fake_upstream: FakeUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(console_files(fake_upstream.base_url))


@pytest.fixture
def admin(gateway: GatewayProcess) -> httpx.Client:
    return login(gateway.url)


def test_nothing_is_served_without_the_admin_cookie(gateway: GatewayProcess) -> None:
    for path in PAGES:
        reply = httpx.get(gateway.url + path)
        assert reply.status_code == 303, path
        assert reply.headers["location"].startswith("/console/login?next=")
        assert "Acme" not in reply.text and "control" not in reply.text
    for path in APIS:
        reply = httpx.post(gateway.url + path, json=ASK)
        assert reply.status_code == 401, path
    assert httpx.get(gateway.url + "/console/static/console.js").status_code == 401
    forged = {"prefit_console": "abc.9999999999.deadbeef"}
    assert httpx.get(gateway.url + "/console", cookies=forged).status_code == 303
    assert httpx.post(gateway.url + "/console/logout", cookies=forged).status_code == 401
    # The login page and its stylesheet are the only things served without a session.
    assert httpx.get(gateway.url + "/console/login").status_code == 200
    assert httpx.get(gateway.url + "/console/static/console.css").status_code == 200


def test_a_gateway_key_is_not_an_admin_key(gateway: GatewayProcess) -> None:
    client = httpx.Client(base_url=gateway.url, timeout=10)
    token = form_token(client.get("/console/login").text)
    for wrong in (GATEWAY_KEY, "", ADMIN_KEY + "x"):
        reply = client.post("/console/login", data={"csrf": token, "key": wrong})
        assert reply.status_code == 401
        assert "not an admin key" in reply.text
        assert "prefit_console=" not in reply.headers.get("set-cookie", "")
    assert client.get("/console").status_code == 303


def test_login_needs_the_form_token(gateway: GatewayProcess) -> None:
    client = httpx.Client(base_url=gateway.url, timeout=10)
    reply = client.post("/console/login", data={"key": ADMIN_KEY})
    assert reply.status_code == 403
    client.get("/console/login")
    reply = client.post("/console/login", data={"key": ADMIN_KEY, "csrf": "0" * 64})
    assert reply.status_code == 403
    assert client.get("/console").status_code == 303


def test_login_sets_a_strict_http_only_cookie_and_logout_ends_it(gateway: GatewayProcess) -> None:
    client = httpx.Client(base_url=gateway.url, timeout=10)
    token = form_token(client.get("/console/login?next=/console/stats").text)
    reply = client.post("/console/login", data={"csrf": token, "key": ADMIN_KEY, "next": "/console/stats"})
    assert reply.status_code == 303
    assert reply.headers["location"] == "/console/stats"
    cookie = next(c for c in reply.headers.get_list("set-cookie") if c.startswith("prefit_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http on loopback; https requests get Secure
    assert client.get("/console").status_code == 200
    page = client.get("/console").text
    assert client.post("/console/logout", data={"csrf": "wrong"}).status_code == 403
    assert client.post("/console/logout", data={"csrf": form_token(page)}).status_code == 303
    assert httpx.get(gateway.url + "/console", cookies=dict(client.cookies)).status_code == 303


def test_secure_cookie_behind_tls(gateway: GatewayProcess) -> None:
    tls = {"x-forwarded-proto": "https"}
    form = httpx.get(gateway.url + "/console/login", headers=tls)
    nonce = form.cookies["prefit_console_login"]
    assert "Secure" in form.headers["set-cookie"]
    headers = {**tls, "cookie": f"prefit_console_login={nonce}"}
    reply = httpx.post(
        gateway.url + "/console/login", data={"csrf": form_token(form.text), "key": ADMIN_KEY}, headers=headers
    )
    cookie = next(c for c in reply.headers.get_list("set-cookie") if c.startswith("prefit_console="))
    assert "Secure" in cookie


def test_login_redirects_only_inside_the_console(gateway: GatewayProcess) -> None:
    client = httpx.Client(base_url=gateway.url, timeout=10)
    token = form_token(client.get("/console/login").text)
    reply = client.post("/console/login", data={"csrf": token, "key": ADMIN_KEY, "next": "https://evil.example/"})
    assert reply.headers["location"] == "/console"


def test_every_post_needs_the_session_csrf_token(gateway: GatewayProcess, admin: httpx.Client) -> None:
    token = page_token(admin.get("/console/playground").text)
    assert admin.post("/console/api/render", json=ASK).status_code == 403
    assert admin.post("/console/api/render", json=ASK, headers={"x-csrf-token": "0" * 64}).status_code == 403
    other = login(gateway.url)
    other_token = page_token(other.get("/console/playground").text)
    assert other_token != token
    assert admin.post("/console/api/render", json=ASK, headers={"x-csrf-token": other_token}).status_code == 403
    assert admin.post("/console/api/render", json=ASK, headers={"x-csrf-token": token}).status_code == 200


def test_pages_carry_a_strict_content_security_policy(admin: httpx.Client) -> None:
    reply = admin.get("/console")
    policy = reply.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["cache-control"] == "no-store"


def test_policies_page(admin: httpx.Client) -> None:
    page = admin.get("/console").text
    for text in ("ab", "plain", "gpt-4o-mini", "v2", "control", "treatment", "70", "30", "few_shot", "retrieval"):
        assert text in page, text
    assert "Last reload: ok" in page


def test_policies_page_shows_reload_errors_with_file_and_line(gateway: GatewayProcess, admin: httpx.Client) -> None:
    broken = gateway.workdir / "policies" / "broken.yaml"
    broken.write_text("upstream: fake\nupstream_model: gpt-4o-mini\nprompt: {version: v1, system: 'oops {{'}\n")
    try:
        wait_for(lambda: not httpx.get(gateway.url + "/readyz").json()["last_reload"]["ok"], "the failed reload")
        page = admin.get("/console").text
        assert "still serving the last good set" in page
        assert "policies/broken.yaml:3:" in page
        assert "template syntax error" in page
    finally:
        broken.unlink()
    wait_for(lambda: httpx.get(gateway.url + "/readyz").json()["last_reload"]["ok"], "the recovery")
    assert "Last reload: ok" in admin.get("/console").text


def test_one_policy_page_renders_prompt_examples_retrieval_and_the_diff(admin: httpx.Client) -> None:
    page = admin.get("/console/policies/ab").text
    assert "You help Acme customers." in page
    assert "card charged twice" in page
    assert '<span class="add">+Be brief and kind.</span>' in page
    assert '<span class="del">-Be brief.</span>' in page
    assert '<span class="add">+Never guess.</span>' in page
    plain = admin.get("/console/policies/plain").text
    assert "docs" in plain and "0.4" in plain and "top_k" in plain
    assert admin.get("/console/policies/missing").status_code == 404


def test_playground_render_returns_the_upstream_body(gateway: GatewayProcess, admin: httpx.Client) -> None:
    token = page_token(admin.get("/console/playground").text)
    reply = admin.post("/console/api/render", json=ASK, headers={"x-csrf-token": token})
    assert reply.status_code == 200
    result = reply.json()
    assert result["status"] == 200
    assert result["headers"]["x-prefit-variant"] == "treatment"
    assert result["headers"]["x-prefit-prompt-version"] == "v3"
    rendered = result["body"]
    assert (rendered["policy"], rendered["variant"], rendered["prompt_version"]) == ("ab", "treatment", "v3")
    assert rendered["body"]["model"] == "gpt-4o"
    assert rendered["body"]["messages"] == [
        {"role": "system", "content": "You help Acme customers.\nBe brief and kind.\nNever guess."},
        {"role": "user", "content": "card charged twice"},
        {"role": "assistant", "content": "billing"},
        {"role": "user", "content": "where is my parcel?"},
    ]


def test_playground_send_answers_through_the_policy(admin: httpx.Client, upstream: FakeUpstream) -> None:
    token = page_token(admin.get("/console/playground").text)
    rendered = admin.post("/console/api/render", json=ASK, headers={"x-csrf-token": token}).json()["body"]
    reply = admin.post("/console/api/send", json=ASK, headers={"x-csrf-token": token})
    assert reply.status_code == 200
    result = reply.json()
    assert result["status"] == 200
    assert result["elapsed_ms"] > 0
    assert result["headers"]["x-prefit-policy"] == "ab"
    assert "where is my parcel?" in result["body"]["choices"][0]["message"]["content"]
    received = upstream.last("/v1/chat/completions")
    assert received.body["messages"] == rendered["body"]["messages"]
    assert received.body["model"] == rendered["body"]["model"] == "gpt-4o"
    bad = admin.post("/console/api/send", json={"policy": "ab", "message": " "}, headers={"x-csrf-token": token})
    assert bad.status_code == 400


def test_eval_runs_list_and_a_saved_run(admin: httpx.Client) -> None:
    listing = admin.get("/console/evals").text
    assert RUN_NAME in listing and "ab-20251231T000000Z.json" in listing
    page = admin.get(f"/console/evals/{RUN_NAME}").text
    assert '<svg class="chart interval-chart"' in page
    assert "0.750 [0.41, 0.93]" in page
    assert "Regressed items" in page and "<code>i2</code>" in page
    assert "treatment: exact_match = 0.500, gate &gt;=0.7" in page
    assert "$0.0123" in page and "$0.0456" in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    no_cost = admin.get("/console/evals/ab-20251231T000000Z.json").text
    assert "No cost in this run" in no_cost
    assert admin.get("/console/evals/..%2Fprefit.yaml").status_code == 404
    assert admin.get("/console/evals/nothing.json").status_code == 404


def test_a_chain_run_shows_every_step_of_every_item(admin: httpx.Client) -> None:
    page = admin.get("/console/evals/ab-chain-20260101T000001Z.json").text
    assert "every chain step, item by item" in page
    for step in ("extract", "classify", "summarise"):
        assert f"<th>{step}</th>" in page
    assert "{&#34;entities&#34;: [&#34;Ann&#34;, &#34;Bob&#34;]}" in page
    assert "positive\nnegative" in page
    assert "<code>extract</code> exact_match 1.000" in page
    plain = admin.get(f"/console/evals/{RUN_NAME}").text
    assert "every chain step" not in plain


def test_live_stats_count_the_gateway_traffic(gateway: GatewayProcess, admin: httpx.Client) -> None:
    for _ in range(3):
        httpx.post(
            gateway.url + "/v1/chat/completions",
            json={"model": "plain", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
            timeout=10,
        ).raise_for_status()
    page = admin.get("/console/stats").text
    assert '<td data-label="Policy">plain</td>' in page
    assert "Non-2xx" in page and "p99" in page
    # The same spend the gateway counts in prefit_cost_usd_total (prices set absurdly high to show it).
    spent = sum(
        float(line.rsplit(" ", 1)[1])
        for line in gateway.metrics().splitlines()
        if line.startswith("prefit_cost_usd_total{") and 'policy="plain"' in line
    )
    assert spent > 0
    assert f'<td data-label="Cost">${spent:.4f}</td>' in page
