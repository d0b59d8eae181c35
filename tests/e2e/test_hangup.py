"""A client that hangs up before its answer cancels the upstream call at once, on every endpoint.

The fake upstream's ``fake-wait`` answers nothing until its client (the gateway) leaves, so each
upstream call here stays open exactly as long as the gateway keeps it; the upstreams' ``timeout_s``
is far longer than any guard below, so only a gateway that noticed the hang-up passes.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import orjson
import pytest

from tests.conftest import UPSTREAM_KEY, GatewayProcess, wait_for
from tests.fakes.upstream import FakeUpstream

USER = [{"role": "user", "content": "where is my parcel"}]
#: method, path and body of one request per endpoint that calls upstream; ``fake-wait`` holds each.
REQUESTS: dict[str, tuple[str, str, dict[str, object] | None]] = {
    "chat": ("POST", "/v1/chat/completions", {"model": "fake-wait", "messages": USER}),
    "chat-policy": ("POST", "/v1/chat/completions", {"model": "waiting", "messages": USER}),
    "chat-stream": ("POST", "/v1/chat/completions", {"model": "fake-wait", "messages": USER, "stream": True}),
    "completions": ("POST", "/v1/completions", {"model": "fake-wait", "prompt": "say hi"}),
    "completions-stream": ("POST", "/v1/completions", {"model": "fake-wait", "prompt": "hi", "stream": True}),
    "embeddings": ("POST", "/v1/embeddings", {"model": "fake-wait", "input": "a parcel"}),
    "passthrough": ("POST", "/v1/files", {"model": "fake-wait"}),
    "passthrough-get": ("GET", "/v1/files?model=fake-wait", None),
}


@pytest.fixture(scope="module")
def gateway(start_gateway, fake_upstream: FakeUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(
        {
            "prefit.yaml": f"""
            upstreams:
              fake: {{base_url: {fake_upstream.base_url}, api_key: {UPSTREAM_KEY}, timeout_s: 120}}
            default_upstream: fake
            resilience: {{request_deadline_s: 120}}
            cache: {{enabled: false}}
            """,
            "policies/waiting.yaml": "upstream_model: fake-wait\n",
        }
    )


@pytest.fixture
def waits(upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    """The fake upstream; no ``fake-wait`` call may outlive a test (a gateway that kept one failed)."""
    yield upstream
    assert upstream.wait_until(lambda: upstream.waiting == 0, timeout=5), "an upstream call was left open"


def _send(gateway: GatewayProcess, name: str, request_id: str) -> socket.socket:
    """Send one whole request on a raw socket and leave the socket open (the client waits)."""
    method, path, body = REQUESTS[name]
    payload = orjson.dumps(body) if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\nx-request-id: {request_id}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    sock.sendall(head.encode() + payload)
    return sock


def _client_closed_count(gateway: GatewayProcess) -> float:
    total = 0.0
    for line in gateway.metrics().splitlines():
        if line.startswith("prefit_requests_total{") and 'status="499"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _hang_up(gateway: GatewayProcess, upstream: FakeUpstream, names: list[str]) -> list[str]:
    """Send each request, wait until the upstream holds them all, then close every client socket.

    Returns the request ids, once the upstream has seen every one of its calls closed.
    """
    ids = [uuid.uuid4().hex for _ in names]
    sockets = [_send(gateway, name, request_id) for name, request_id in zip(names, ids, strict=True)]
    try:
        assert upstream.wait_until(lambda: upstream.held == len(names)), "the upstream did not get every call"
    finally:
        for sock in sockets:
            sock.close()
    closed = upstream.wait_until(lambda: upstream.abandoned == len(names), timeout=5)
    assert closed, f"{len(names) - upstream.abandoned} upstream calls were still open after their clients hung up"
    return ids


@pytest.mark.parametrize("name", list(REQUESTS))
def test_hang_up_before_the_first_byte_cancels_the_upstream_call(
    gateway: GatewayProcess, waits: FakeUpstream, name: str
) -> None:
    before = _client_closed_count(gateway)
    [request_id] = _hang_up(gateway, waits, [name])
    wait_for(lambda: _client_closed_count(gateway) == before + 1, "the hang-up counted as status 499")
    wait_for(lambda: any(r.get("request_id") == request_id for r in gateway.records()), "the access log line")
    [line] = [r for r in gateway.records() if r.get("request_id") == request_id]
    assert line["status"] == 499 and line["error"] == "client_closed"


def test_many_concurrent_hang_ups_leave_no_upstream_call_open(gateway: GatewayProcess, waits: FakeUpstream) -> None:
    before = _client_closed_count(gateway)
    names = [list(REQUESTS)[i % len(REQUESTS)] for i in range(20)]
    _hang_up(gateway, waits, names)
    assert waits.waiting == 0, "upstream calls were left open"
    wait_for(lambda: _client_closed_count(gateway) == before + 20, "every hang-up counted as status 499")


def test_hang_up_while_sending_the_body_is_499_not_a_gateway_error(gateway: GatewayProcess) -> None:
    request_id = uuid.uuid4().hex
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: 1000\r\nx-request-id: {request_id}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(head.encode() + b'{"model": "fake-wait", "mess')
    wait_for(lambda: any(r.get("request_id") == request_id for r in gateway.records()), "the access log line")
    [line] = [r for r in gateway.records() if r.get("request_id") == request_id]
    assert line["status"] == 499 and line["error"] == "client_closed"
    assert not [r for r in gateway.records("gateway.serving.exchange") if r.get("request_id") == request_id]
