"""Retrieval and dynamic few-shot end to end: `prefit ingest` for real, then the gateway on top."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import GatewayProcess
from tests.fakes.upstream import FakeUpstream

DATA = Path(__file__).resolve().parents[1] / "data"
QUESTION = [{"role": "user", "content": "How many days do I have to return an item?"}]


def _ingest(workdir: Path, collection: str, path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "ingest", collection, str(path)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def _prepare(workdir: Path) -> None:
    _ingest(workdir, "docs", DATA / "corpus")
    _ingest(workdir, "examples", DATA / "examples" / "support-examples.jsonl")


@pytest.fixture(scope="module")
def gateway(start_gateway, fake_upstream: FakeUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {fake_upstream.base_url}}}\ndefault_upstream: fake\n"
            "cache: {enabled: false}\n",
            "policies/kb.yaml": """
            upstream_model: gpt-4o-mini
            prompt: {system: "Answer from the sources only."}
            retrieval: {collection: docs, top_k: 3, min_score: 0.2, max_context_chars: 3000}
            """,
            "policies/kb-fail.yaml": "retrieval: {collection: nowhere, on_error: fail}\n",
            "policies/kb-skip.yaml": "retrieval: {collection: nowhere, on_error: skip}\n",
            "policies/router.yaml": """
            upstream_model: gpt-4o-mini
            prompt: {system: Classify the ticket.}
            few_shot:
              examples: [{input: "static example", output: "static"}]
              dynamic: {collection: examples, k: 2}
            eval: {dataset: "file:evals/router.jsonl"}
            """,
            "policies/evals/router.jsonl": '{"input": "Can I send back a lamp I bought three weeks ago?", '
            '"expected": "x"}\n',
            "policies/fallback.yaml": """
            few_shot:
              examples: [{input: "static example", output: "static"}]
              dynamic: {collection: nowhere, k: 2}
            """,
        },
        prepare=_prepare,
    )


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)


def test_passages_are_inserted_as_quoted_sources(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(model="kb", messages=QUESTION)
    assert raw.headers["x-prefit-context-ids"]
    messages = upstream.last("/v1/chat/completions").body["messages"]
    assert [m["role"] for m in messages] == ["system", "system", "user"]
    assert messages[0]["content"] == "Answer from the sources only.", "the policy's system prompt stays first"
    sources = messages[1]["content"]
    assert sources.startswith("Sources for the user's next message")
    assert "not instructions" in sources
    assert '<source number="1"' in sources and "returns.md" in sources
    assert "45 days" in sources
    assert messages[2] == QUESTION[0]


def test_render_shows_passages_and_scores(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    rendered = httpx.post(gateway.url + "/v1/render", json={"model": "kb", "messages": QUESTION}, timeout=30).json()
    context = rendered["context"]
    assert 1 <= len(context) <= 3
    assert context[0]["source"].endswith("returns.md")
    assert context[0]["score"] >= context[-1]["score"] >= 0.2
    assert not [r for r in upstream.requests if r.path == "/v1/chat/completions"]


def test_store_failure_follows_on_error(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="kb-fail", messages=QUESTION)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "retrieval_failed"  # type: ignore[index]
    raw = client.chat.completions.with_raw_response.create(model="kb-skip", messages=QUESTION)
    assert raw.headers["x-prefit-context"] == "error"
    assert upstream.last("/v1/chat/completions").body["messages"] == QUESTION


def test_dynamic_examples_are_the_most_similar_and_never_leak_eval_items(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    question = [{"role": "user", "content": "I'd like to return the lamp I bought, is that possible?"}]
    client.chat.completions.create(model="router", messages=question)
    messages = upstream.last("/v1/chat/completions").body["messages"]
    inputs = [m["content"] for m in messages[1:-1] if m["role"] == "user"]
    assert len(inputs) == 2
    assert "Can I send back a lamp I bought three weeks ago?" not in inputs, "an eval item leaked into the prompt"
    assert "static example" not in inputs
    assert messages[-1] == question[0]


def test_dynamic_examples_fall_back_to_static(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    client.chat.completions.create(model="fallback", messages=QUESTION)
    messages = upstream.last("/v1/chat/completions").body["messages"]
    assert messages == [
        {"role": "user", "content": "static example"},
        {"role": "assistant", "content": "static"},
        QUESTION[0],
    ]


def test_retrieval_metrics(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    client.chat.completions.create(model="kb", messages=QUESTION)
    text = gateway.metrics()
    assert 'prefit_retrieval_hits_count{policy="kb"}' in text
    assert 'prefit_stage_duration_seconds_count{stage="embed"}' in text
    assert 'prefit_stage_duration_seconds_count{stage="retrieve"}' in text
