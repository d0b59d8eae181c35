"""Retrieval and dynamic few-shot end to end: `prefit ingest` for real, then the gateway on top."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

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


def _sample(gateway: GatewayProcess, name: str, **labels: str) -> float:
    """The value of one series in the gateway's /metrics (0 when it has none)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(gateway.metrics())
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def _warnings(gateway: GatewayProcess, policy: str) -> list[dict[str, object]]:
    return [
        r for r in gateway.records("gateway.serving.store_health") if r["level"] == "warning" and r["policy"] == policy
    ]


def _prepare(workdir: Path) -> None:
    _ingest(workdir, "docs", DATA / "corpus")
    _ingest(workdir, "examples", DATA / "examples" / "support-examples.jsonl")
    _ingest(workdir, "printer", DATA / "hybrid")


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
            "policies/printer.yaml": "retrieval: {collection: printer, top_k: 2}\n",
            "policies/printer-dense.yaml": "retrieval: {collection: printer, top_k: 2, mode: dense}\n",
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


def test_responses_requests_get_the_sources_too(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.responses.with_raw_response.create(model="kb", input=QUESTION[0]["content"])
    assert raw.headers["x-prefit-context-ids"]
    items = upstream.last("/v1/responses").body["input"]
    assert [item["role"] for item in items] == ["system", "system", "user"]
    assert items[0]["content"] == "Answer from the sources only."
    assert "45 days" in items[1]["content"] and items[2]["content"] == QUESTION[0]["content"]


def _first_heading(raw_header: str) -> str:
    entry = dict(part.split("=", 1) for part in raw_header.split(",")[0].split(";")[1:])
    return unquote(entry["heading"])


def test_hybrid_is_the_default_and_finds_the_exact_code(client: openai.OpenAI) -> None:
    question = [{"role": "user", "content": "How to clear E-7713"}]
    hybrid = client.chat.completions.with_raw_response.create(model="printer", messages=question)
    dense = client.chat.completions.with_raw_response.create(model="printer-dense", messages=question)

    assert _first_heading(hybrid.headers["x-prefit-context-ids"]) == "Printer error codes \u203a E-7713"
    assert _first_heading(dense.headers["x-prefit-context-ids"]) != "Printer error codes \u203a E-7713"


def test_passages_keep_their_heading_path_in_text_header_and_render(
    client: openai.OpenAI, upstream: FakeUpstream, gateway: GatewayProcess
) -> None:
    question = [{"role": "user", "content": "What does error E-4012 mean?"}]
    raw = client.chat.completions.with_raw_response.create(model="printer", messages=question)
    first = raw.headers["x-prefit-context-ids"].split(",")[0]
    assert "source=" in first and first.split(";source=")[1].split(";")[0].endswith("hybrid/error-codes.md")
    assert _first_heading(first) == "Printer error codes \u203a E-4012"
    sources = upstream.last("/v1/chat/completions").body["messages"][0]["content"]
    assert "Printer error codes \u203a E-4012\nThe print head is overheating." in sources

    rendered = httpx.post(gateway.url + "/v1/render", json={"model": "printer", "messages": question}, timeout=30)
    assert rendered.json()["context"][0]["heading"] == "Printer error codes \u203a E-4012"


def test_render_shows_passages_and_scores(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    rendered = httpx.post(gateway.url + "/v1/render", json={"model": "kb", "messages": QUESTION}, timeout=30).json()
    context = rendered["context"]
    assert 1 <= len(context) <= 3
    assert context[0]["source"].endswith("returns.md")
    assert context[0]["score"] >= context[-1]["score"] >= 0.2
    assert not [r for r in upstream.requests if r.path == "/v1/chat/completions"]


def test_store_failure_follows_on_error(client: openai.OpenAI, upstream: FakeUpstream, gateway: GatewayProcess) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="kb-fail", messages=QUESTION)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "retrieval_failed"  # type: ignore[index]
    raw = client.chat.completions.with_raw_response.create(model="kb-skip", messages=QUESTION)
    assert raw.headers["x-prefit-context"] == "error"
    assert upstream.last("/v1/chat/completions").body["messages"] == QUESTION
    for policy in ("kb-fail", "kb-skip"):
        assert _sample(gateway, "prefit_retrieval_errors_total", policy=policy, reason="collection_missing") == 1
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert ready.json()["retrieval"]["kb-skip"][0] | {"at": 0} == {
        "collection": "nowhere",
        "layer": "retrieval",
        "error": "collection_missing",
        "at": 0,
    }
    assert "kb" not in ready.json()["retrieval"], "a policy whose searches work is not listed"


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


def test_dynamic_examples_fall_back_to_static(
    client: openai.OpenAI, upstream: FakeUpstream, gateway: GatewayProcess
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="fallback", messages=QUESTION)
    messages = upstream.last("/v1/chat/completions").body["messages"]
    assert messages == [
        {"role": "user", "content": "static example"},
        {"role": "assistant", "content": "static"},
        QUESTION[0],
    ]
    assert raw.headers["x-prefit-context"] == "error", "the fallback is not silent"
    assert _sample(gateway, "prefit_retrieval_errors_total", policy="fallback", reason="collection_missing") == 1
    assert "fallback" in httpx.get(gateway.url + "/readyz").json()["retrieval"]


def test_retrieval_metrics(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    client.chat.completions.create(model="kb", messages=QUESTION)
    text = gateway.metrics()
    assert 'prefit_retrieval_hits_count{policy="kb"}' in text
    assert 'prefit_stage_duration_seconds_count{stage="embed"}' in text
    assert 'prefit_stage_duration_seconds_count{stage="retrieve"}' in text


# -- a store another process holds ------------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import sys
    from gateway.retrieval.vectors import VectorStore

    store = VectorStore(path=sys.argv[1])
    print("open", flush=True)
    sys.stdin.read()  # hold the storage until the test closes our stdin
    store.close()
    """
)


@pytest.fixture(scope="module")
def locked(start_gateway, fake_upstream: FakeUpstream) -> Iterator[GatewayProcess]:  # type: ignore[no-untyped-def]
    """A gateway whose embedded store another process (say, a `prefit ingest`) holds from the start."""
    holders: list[subprocess.Popen[str]] = []

    def hold(workdir: Path) -> None:
        child = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(workdir / ".prefit" / "qdrant")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        holders.append(child)
        assert child.stdout is not None and child.stdout.readline().strip() == "open"

    gateway = start_gateway(
        {
            "prefit.yaml": f"upstreams:\n  fake: {{base_url: {fake_upstream.base_url}}}\ndefault_upstream: fake\n"
            "cache: {enabled: false}\n",
            "policies/kb.yaml": """
            upstream_model: gpt-4o-mini
            prompt: {system: "Answer from the sources only."}
            retrieval: {collection: docs}
            """,
            "policies/idle.yaml": "retrieval: {collection: docs}\n",
            "policies/router.yaml": """
            few_shot:
              examples: [{input: "static example", output: "static"}]
              dynamic: {collection: examples, k: 2}
            """,
        },
        prepare=hold,
    )
    yield gateway
    for child in holders:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.wait(timeout=30)
        child.stdout.close()


def test_a_locked_store_shows_in_readyz_from_start_up(locked: GatewayProcess) -> None:
    ready = httpx.get(locked.url + "/readyz")
    assert ready.status_code == 200, "on_error: skip still answers: the replica stays in rotation"
    assert ready.json()["status"] == "degraded"
    idle = ready.json()["retrieval"]["idle"]  # no request ever asked this policy
    assert [(e["collection"], e["layer"], e["error"]) for e in idle] == [("docs", "retrieval", "store_locked")]
    assert [w["reason"] for w in _warnings(locked, "idle")] == ["store_locked"]


def test_a_locked_store_is_loud_when_answering_without_context(locked: GatewayProcess, upstream: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=locked.url + "/v1", api_key="k", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="kb", messages=QUESTION)
    assert raw.headers["x-prefit-context"] == "error"
    assert upstream.last("/v1/chat/completions").body["messages"] == [
        {"role": "system", "content": "Answer from the sources only."},
        QUESTION[0],
    ]
    assert _sample(locked, "prefit_retrieval_errors_total", policy="kb", reason="store_locked") == 1
    request_lines = [w for w in _warnings(locked, "kb") if "lacks its context" in str(w["message"])]
    assert len(request_lines) == 1
    line = request_lines[0]
    assert (line["collection"], line["layer"], line["reason"]) == ("docs", "retrieval", "store_locked")
    assert "qdrant.url" in str(line["error"])
    assert QUESTION[0]["content"] not in locked.log, "no prompt text in the log"


def test_dynamic_few_shot_on_a_locked_store_is_loud(locked: GatewayProcess, upstream: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=locked.url + "/v1", api_key="k", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="router", messages=QUESTION)
    assert raw.headers["x-prefit-context"] == "error"
    assert upstream.last("/v1/chat/completions").body["messages"][0] == {"role": "user", "content": "static example"}
    assert _sample(locked, "prefit_retrieval_errors_total", policy="router", reason="store_locked") == 1
    assert any(
        w["layer"] == "few_shot" and "lacks its context" in str(w["message"]) for w in _warnings(locked, "router")
    )


def test_render_on_a_locked_store_fails_with_the_cause(locked: GatewayProcess) -> None:
    reply = httpx.post(locked.url + "/v1/render", json={"model": "kb", "messages": QUESTION}, timeout=30)
    assert reply.status_code == 502
    error = reply.json()["error"]
    assert error["code"] == "retrieval_failed"
    assert "already in use by another process" in error["message"] and "qdrant.url" in error["message"]


def test_prefit_render_on_a_locked_store_fails_with_the_cause(locked: GatewayProcess) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "render", "kb", "-m", QUESTION[0]["content"]],
        cwd=locked.workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout
    assert "already in use by another process" in done.stderr
    assert done.stdout == "", "no body without its sources"
