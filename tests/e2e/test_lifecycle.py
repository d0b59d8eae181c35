"""Stopping ``prefit serve``: Ctrl-C (SIGINT) and SIGTERM drain the requests in flight and exit 0.

``make serve`` runs the gateway in the foreground, so a stop that was asked for must not look like
a crash (click's ``Aborted!``, make's ``Error 1``, or death by signal for a supervisor).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayProcess, wait_for, write_files
from tests.fakes.upstream import FakeUpstream


def _serve(tmp_path: Path, upstream: FakeUpstream) -> GatewayProcess:
    write_files(
        tmp_path,
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {upstream.base_url}}}\ndefault_upstream: fake\n",
            "policies/held.yaml": "upstream_model: fake-hold\n",
        },
    )
    return GatewayProcess(tmp_path, [])


def _stopped(gateway: GatewayProcess) -> int:
    code = gateway.process.wait(30)
    gateway.stop()  # joins the log reader
    return code


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_gateway_cleanly(tmp_path: Path, upstream: FakeUpstream, sig: signal.Signals) -> None:
    gateway = _serve(tmp_path, upstream)
    assert httpx.get(gateway.url + "/healthz", timeout=10).status_code == 200
    gateway.process.send_signal(sig)
    code = _stopped(gateway)
    assert code == 0, gateway.log
    assert "Aborted!" not in gateway.log
    assert "Traceback" not in gateway.log


def test_a_stop_lets_the_request_in_flight_finish(tmp_path: Path, upstream: FakeUpstream) -> None:
    gateway = _serve(tmp_path, upstream)
    received: list[str] = []

    def stream() -> None:
        body = {"model": "held", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=30) as reply:
            received.extend(reply.iter_text())

    client = threading.Thread(target=stream)
    client.start()
    assert upstream.hold_started.wait(10), "the upstream never started its answer"
    gateway.process.send_signal(signal.SIGINT)
    wait_for(lambda: "Shutting down" in gateway.log, "the gateway to begin its shutdown")
    assert gateway.process.poll() is None, "the gateway must wait for the request in flight"
    upstream.release()
    client.join(30)
    assert "after release" in "".join(received)
    assert _stopped(gateway) == 0, gateway.log
