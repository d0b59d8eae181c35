"""Shadow copies and captured traffic on a real gateway: a shadow slowed to seconds does not hold
the client's answer, copies beyond the bound are dropped and counted, and captured lines load as
an eval dataset with credentials scrubbed."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.eval.runner import load_dataset
from tests.conftest import UPSTREAM_KEY, GatewayProcess, wait_for
from tests.fakes.upstream import FakeUpstream

SHADOWED = """
upstream_model: gpt-4o-mini
cache: {mode: never}
prompt: {version: v1, system: Be brief.}
variants:
  - {name: live, weight: 100}
  - {name: candidate, weight: 0, upstream_model: fake-slow}
shadow: {variant: candidate, sample: 1.0}
"""
CAPTURED = """
upstream_model: gpt-4o-mini
cache: {mode: never}
prompt: {version: v3, system: Answer in one sentence.}
capture: {sample: 1.0, to: "file:captures/support.jsonl"}
"""


def _settings(upstream: FakeUpstream, extra: str = "") -> str:
    return (
        f"upstreams:\n  fake: {{base_url: {upstream.base_url}, api_key: {UPSTREAM_KEY}}}\n"
        f"default_upstream: fake\n{extra}"
    )


def _chat(gateway: GatewayProcess, model: str, text: str, pin: str | None = None) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    headers = {"x-prefit-variant": pin} if pin else {}
    reply = httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply


def _lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _count(gateway: GatewayProcess, family: str, result: str) -> float:
    found = re.search(rf'^{family}_total{{policy="\w+",result="{result}"}} (\S+)$', gateway.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


def test_a_slow_shadow_does_not_hold_the_answer_and_both_answers_are_stored(
    start_gateway,  # type: ignore[no-untyped-def]
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upstream, "slow_seconds", 3.0)
    gateway = start_gateway(
        {"prefit.yaml": _settings(upstream, "feedback: {shadow_concurrency: 1}\n"), "policies/faq.yaml": SHADOWED}
    )
    stored = gateway.workdir / ".prefit" / "shadow" / "faq.jsonl"
    reply = _chat(gateway, "faq", "when do you open?")
    assert reply.headers["x-prefit-variant"] == "live"
    assert reply.json()["choices"][0]["message"]["content"] == "echo: when do you open?"
    wait_for(
        lambda: any(isinstance(r.body, dict) and r.body.get("model") == "fake-slow" for r in upstream.requests),
        "the shadow call to start",
    )
    assert _lines(stored) == []  # the client has its answer while the shadow's upstream is still working

    _chat(gateway, "faq", "and on sundays?")  # one copy is in flight: this one is dropped and counted
    assert _count(gateway, "prefit_shadow", "dropped") == 1.0

    wait_for(lambda: len(_lines(stored)) == 1, "the shadow answer to be stored")
    (line,) = _lines(stored)
    assert line["id"] == reply.headers["x-prefit-request-id"]
    assert line["input"] == [{"role": "user", "content": "when do you open?"}]
    assert line["expected"] is None
    assert line["outputs"] == {"live": "echo: when do you open?", "candidate": "too late"}
    assert _count(gateway, "prefit_shadow", "stored") == 1.0


def test_a_streamed_answer_is_shadowed_with_its_full_text(
    start_gateway,  # type: ignore[no-untyped-def]
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upstream, "slow_seconds", 0.0)
    gateway = start_gateway({"prefit.yaml": _settings(upstream), "policies/faq.yaml": SHADOWED})
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json={"model": "faq", "stream": True, "messages": [{"role": "user", "content": "opening hours"}]},
        timeout=30,
    ) as response:
        assert "[DONE]" in "".join(response.iter_text())
    stored = gateway.workdir / ".prefit" / "shadow" / "faq.jsonl"
    wait_for(lambda: len(_lines(stored)) == 1, "the shadow answer to be stored")
    assert _lines(stored)[0]["outputs"] == {"live": "echo: opening hours", "candidate": "too late"}


def test_captured_lines_load_as_an_eval_dataset_without_credentials(
    start_gateway,  # type: ignore[no-untyped-def]
    upstream: FakeUpstream,
) -> None:
    gateway = start_gateway({"prefit.yaml": _settings(upstream), "policies/support.yaml": CAPTURED})
    pinned = _chat(gateway, "support", "pinned?", pin="default").headers["x-prefit-request-id"]
    ids = [_chat(gateway, "support", text).headers["x-prefit-request-id"] for text in ("refunds?", "returns?")]
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json={"model": "support", "stream": True, "messages": [{"role": "user", "content": f"key {UPSTREAM_KEY}"}]},
        timeout=30,
    ) as response:
        "".join(response.iter_text())
    path = gateway.workdir / "captures" / "support.jsonl"
    wait_for(lambda: len(_lines(path)) == 3, "three captured items")
    assert UPSTREAM_KEY not in path.read_text()
    items = {item.id: item for item in load_dataset(path)}
    assert pinned not in items  # a pinned request (an admin, prefit eval) is not production traffic
    first = items[ids[0]]
    assert first.input == [{"role": "user", "content": "refunds?"}]  # the client's messages, not the policy's prompt
    assert first.expected == "echo: refunds?"
    assert first.metadata["reviewed"] is False
    assert first.metadata["prompt_version"] == "v3"
    streamed = next(item for item in items.values() if item.id not in ids)
    assert streamed.expected == "echo: key [redacted]"
    assert _count(gateway, "prefit_captured", "stored") == 3.0
