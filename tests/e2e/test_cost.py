"""What every policy costs: prices times upstream usage, for plain and streamed calls, and in eval."""

from __future__ import annotations

import re
import subprocess
import sys

import openai
import orjson
import pytest

from tests.conftest import GatewayProcess, wait_for
from tests.fakes.upstream import FakeUpstream

HELLO = [{"role": "user", "content": "hello there"}]


def _cost(gateway: GatewayProcess, policy: str) -> float:
    pattern = rf'prefit_cost_usd_total{{model="gpt-4o-mini",policy="{policy}",variant="default"}} (\S+)'
    found = re.search(pattern, gateway.metrics())
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def gateway(start_gateway, fake_upstream: FakeUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {fake_upstream.base_url}}}\ndefault_upstream: fake\n"
            "cache: {enabled: false}\n"
            "prices:\n  gpt-4o-mini: {input: 0.15, output: 0.60}\n",
            "policies/priced.yaml": "upstream_model: gpt-4o-mini\n",
            "policies/unpriced.yaml": "upstream_model: some-free-model\n",
            "policies/no-usage.yaml": "upstream_model: fake-no-usage\n",
            "policies/evals/priced.jsonl": '{"input": "hello there", "expected": "echo: hello there"}\n'
            '{"input": "one two three four", "expected": "nope"}\n',
            "policies/priced-eval.yaml": "upstream_model: gpt-4o-mini\neval: {dataset: 'file:evals/priced.jsonl'}\n",
        }
    )


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)


def test_plain_call_cost(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    raw = client.chat.completions.with_raw_response.create(model="priced", messages=HELLO)
    # the fake answers "echo: hello there": 3 prompt and 4 completion tokens
    expected = (3 * 0.15 + 4 * 0.60) / 1e6
    assert float(raw.headers["x-prefit-cost-usd"]) == pytest.approx(expected)
    assert _cost(gateway, "priced") == pytest.approx(expected)


def test_streamed_cost_asks_for_usage_and_strips_it(
    client: openai.OpenAI, gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    chunks = list(client.chat.completions.create(model="priced", messages=HELLO, stream=True))
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks), "the usage-only chunk the client did not ask for is stripped"
    assert upstream.last("/v1/chat/completions").body["stream_options"] == {"include_usage": True}
    # streamed usage of the fake: 2 prompt and 3 completion tokens
    assert _cost(gateway, "priced") == pytest.approx((2 * 0.15 + 3 * 0.60) / 1e6)
    with_usage = list(
        client.chat.completions.create(
            model="priced", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert with_usage[-1].usage is not None and with_usage[-1].usage.prompt_tokens == 2
    assert _cost(gateway, "priced") == pytest.approx(2 * (2 * 0.15 + 3 * 0.60) / 1e6)


def test_unpriced_models_cost_nothing_visible(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    raw = client.chat.completions.with_raw_response.create(model="unpriced", messages=HELLO)
    assert "x-prefit-cost-usd" not in raw.headers
    assert 'policy="unpriced"' not in "".join(
        line for line in gateway.metrics().splitlines() if line.startswith("prefit_cost_usd_total")
    )


def test_answers_without_usage_are_counted_so_the_gap_shows(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    raw = client.chat.completions.with_raw_response.create(model="no-usage", messages=HELLO)
    assert raw.parse().usage is None and "x-prefit-cost-usd" not in raw.headers
    chunks = list(client.chat.completions.create(model="no-usage", messages=HELLO, stream=True))
    assert chunks, "the upstream ignored include_usage, as llama.cpp does"
    client.chat.completions.create(model="priced", messages=HELLO)
    list(client.chat.completions.create(model="priced", messages=HELLO, stream=True))
    text = gateway.metrics()
    assert 'prefit_usage_missing_total{policy="no-usage",upstream="fake",variant="default"} 2.0' in text
    assert 'prefit_usage_missing_total{policy="priced"' not in text, "answers with usage are not counted"

    def lines() -> list[dict[str, object]]:
        return [r for r in gateway.records() if r.get("policy") == "no-usage"]

    wait_for(lambda: len(lines()) == 2, "the access log lines (written in batches)")
    assert [line.get("usage_missing") for line in lines()] == [1, 1]


def test_eval_reports_cost_per_item_and_variant(gateway: GatewayProcess, tmp_path) -> None:  # type: ignore[no-untyped-def]
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "eval", "priced-eval", "--json", str(report)],
        cwd=gateway.workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    variant = orjson.loads(report.read_bytes())["variants"]["default"]
    items = {item["id"]: item["cost_usd"] for item in variant["items"]}
    first, second = (3 * 0.15 + 4 * 0.6) / 1e6, (5 * 0.15 + 6 * 0.6) / 1e6
    assert items["1"] == pytest.approx(first)
    assert items["2"] == pytest.approx(second)
    assert variant["cost_usd"] == pytest.approx(first + second)
    assert "cost USD" in done.stdout
