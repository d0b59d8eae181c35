"""An adaptive experiment on two replicas and one Redis: feedback sent to either moves both
replicas' allocation to the better arm, every arm keeps its floor, and ``prefit experiments``
reads the shared posterior."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import uuid

import httpx

from tests.conftest import GatewayProcess, wait_for
from tests.e2e.test_feedback import forget_keys
from tests.fakes.upstream import FakeUpstream

CHAT = {"messages": [{"role": "user", "content": "where is my parcel?"}]}
POLICY = """
upstream_model: gpt-4o-mini
cache: {mode: never}
variants:
  - {name: a, weight: 50}
  - {name: b, weight: 50}
experiment: {metric: resolved, min_samples: 20, floor: 0.1}
"""
RATES = {"a": 0.2, "b": 0.8}


def _share(gateway: GatewayProcess, variant: str) -> float:
    series = rf'^prefit_experiment_share{{policy="support",variant="{variant}"}} (\S+)$'
    found = re.search(series, gateway.metrics(), re.M)
    return float(found.group(1)) if found else -1.0


def test_allocation_moves_to_the_better_arm_on_every_replica(start_gateway, fake_upstream: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    prefix = f"prefit-test-{uuid.uuid4().hex[:8]}:"
    settings = (
        f"upstreams:\n  fake: {{base_url: {fake_upstream.base_url}}}\ndefault_upstream: fake\n"
        f"redis_url: redis://127.0.0.1:6379/0\nredis: {{key_prefix: '{prefix}'}}\nfeedback: {{refresh_s: 0.2}}\n"
    )
    files = {"prefit.yaml": settings, "policies/support.yaml": POLICY}
    first, second = start_gateway(files), start_gateway(files)
    wait_for(lambda: _share(first, "a") == _share(first, "b") == 0.5, "the first allocation: the weights")
    rng = random.Random(3)
    seen = {"a": 0, "b": 0}
    with httpx.Client(timeout=10) as client:
        for n in range(160):
            answering, told = (first, second) if n % 2 else (second, first)
            body = {"model": "support", "user": f"user-{n}", **CHAT}
            reply = client.post(answering.url + "/v1/chat/completions", json=body)
            variant = reply.headers["x-prefit-variant"]
            seen[variant] += 1
            feedback = {"request_id": reply.headers["x-prefit-request-id"], "metric": "resolved"}
            feedback["value"] = rng.random() < RATES[variant]  # type: ignore[assignment]
            assert client.post(told.url + "/v1/feedback", json=feedback).status_code == 204
    assert min(seen.values()) >= 20, seen
    for gateway in (first, second):
        wait_for(lambda g=gateway: _share(g, "b") > 0.8, "the allocation to move to b")  # type: ignore[misc]
        assert _share(gateway, "a") >= 0.1

    shown = subprocess.run(
        [sys.executable, "-m", "gateway", "experiments", "support", "--config", str(first.workdir / "prefit.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    forget_keys(prefix)
    assert "winner: b" in shown, shown
    assert re.search(r"│ b\s+│\s+\d+ │", shown), shown


def test_a_reload_recomputes_the_allocation_at_once(start_gateway, fake_upstream: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    settings = (
        f"upstreams:\n  fake: {{base_url: {fake_upstream.base_url}}}\ndefault_upstream: fake\n"
        "feedback: {refresh_s: 600}\n"
    )
    policy = POLICY.replace("min_samples: 20", "min_samples: 3")
    gateway = start_gateway({"prefit.yaml": settings, "policies/support.yaml": policy})
    wait_for(lambda: _share(gateway, "b") == 0.5, "the first allocation: the weights")
    with httpx.Client(timeout=10) as client:
        for variant, value in [("a", False), ("b", True)] * 3:
            body = {"model": "support", **CHAT}
            reply = client.post(gateway.url + "/v1/chat/completions", json=body, headers={"x-prefit-variant": variant})
            feedback = {"request_id": reply.headers["x-prefit-request-id"], "metric": "resolved", "value": value}
            assert client.post(gateway.url + "/v1/feedback", json=feedback).status_code == 204
    assert _share(gateway, "b") == 0.5  # the next refresh is ten minutes away
    (gateway.workdir / "policies" / "support.yaml").write_text(policy + "description: reloaded\n")
    wait_for(lambda: _share(gateway, "b") > 0.6, "the reload to recompute the shares")
