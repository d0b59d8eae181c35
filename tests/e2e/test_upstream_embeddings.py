"""``embedding: {upstream, model}``: ingest and queries embedded by an upstream's /v1/embeddings,
and a collection that refuses an embedder other than the one that made it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import openai

from tests.conftest import write_files
from tests.fakes.upstream import FakeUpstream

DATA = Path(__file__).resolve().parents[1] / "data"


def _settings(upstream: FakeUpstream, embedding: str) -> str:
    return (
        f"upstreams:\n  fake: {{base_url: {upstream.base_url}}}\ndefault_upstream: fake\n"
        f"cache: {{enabled: false}}\n{embedding}"
    )


def _ingest(workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "ingest", "printer", str(DATA / "hybrid")],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_an_upstream_embeds_ingest_and_queries_and_the_collection_remembers_it(
    start_gateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    remote = "embedding: {upstream: fake, model: fake-embed}\n"
    fake_upstream.reset()

    def prepare(workdir: Path) -> None:
        done = _ingest(workdir)
        assert done.returncode == 0, done.stderr

    gateway = start_gateway(
        {
            "prefit.yaml": _settings(fake_upstream, remote),
            "policies/printer.yaml": "upstream_model: gpt-4o-mini\nretrieval: {collection: printer, top_k: 1}\n",
        },
        prepare=prepare,
    )
    embedded = [r.body for r in fake_upstream.requests if r.path == "/v1/embeddings"]
    assert embedded and all(body["model"] == "fake-embed" for body in embedded)
    assert any("The print head is overheating." in text for body in embedded for text in body["input"])

    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    question = [{"role": "user", "content": "What does error E-4012 mean?"}]
    raw = client.chat.completions.with_raw_response.create(model="printer", messages=question)
    assert "hybrid/error-codes.md" in raw.headers["x-prefit-context-ids"]
    assert fake_upstream.last("/v1/embeddings").body["input"] == ["What does error E-4012 mean?"]

    # the same collection with the in-process model: a load error on /readyz and in ingest
    local = gateway.workdir
    write_files(local, {"prefit.yaml": _settings(fake_upstream, "")})
    gateway.stop()
    done = _ingest(local)
    assert done.returncode == 1
    assert "was made by embedder 'upstream:fake/fake-embed'" in done.stderr
    other = start_gateway(
        {
            "prefit.yaml": _settings(fake_upstream, f"qdrant: {{path: {local / '.prefit' / 'qdrant'}}}\n"),
            "policies/printer.yaml": "upstream_model: gpt-4o-mini\nretrieval: {collection: printer, top_k: 1}\n",
        }
    )
    failed = openai.OpenAI(base_url=other.url + "/v1", api_key="k", max_retries=0)
    raw = failed.chat.completions.with_raw_response.create(model="printer", messages=question)
    assert raw.headers["x-prefit-context"] == "error"
    ready = httpx.get(other.url + "/readyz").json()
    assert ready["retrieval"]["printer"][0]["error"] == "embedder_mismatch"
