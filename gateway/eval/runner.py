"""``prefit eval``: run a held-out set through the real gateway, once per variant, and score it.

Every item goes through the same HTTP pipeline as production: a gateway started in this process
on a loopback port (or a running one with ``--url``), each variant pinned with ``x-prefit-variant``.
Calls are cached on disk by the exact upstream request (from ``/v1/render``) and the repeat index,
so re-running an unchanged variant costs nothing; ``--no-cache`` refreshes, and repeats never share
an entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from pydantic import SecretStr

from gateway.config.load import Config, LoadedPolicy
from gateway.eval.retrieval import Retrieved, parse_context_header
from gateway.eval.scoring import Scorer
from gateway.eval.steps import score_steps
from gateway.retrieval.resources import ResourceHub
from gateway.server import create_app
from gateway.serving.answer import STEPS_HEADER

__all__ = ["EvalItem", "ItemResult", "Runner", "in_process_gateway", "load_dataset"]


@dataclass(frozen=True, slots=True)
class EvalItem:
    id: str
    input: str | list[dict[str, Any]]
    expected: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Where the record came from, so a message about it can name the file and line.
    source: str = ""
    line: int = 0
    #: Step name -> what that chain step should say (scored beside the answer).
    expected_steps: dict[str, Any] = field(default_factory=dict)
    #: Sources (file names or chunk ids) a good retrieval inserts for this item.
    expected_sources: tuple[str, ...] = ()

    def text(self) -> str:
        """The input as one string: a message list joins its turns' contents."""
        if isinstance(self.input, str):
            return self.input
        return "\n".join(str(m.get("content", "")) for m in self.input if isinstance(m, dict))

    def messages(self) -> list[dict[str, Any]]:
        if isinstance(self.input, str):
            return [{"role": "user", "content": self.input}]
        return list(self.input)


@dataclass(slots=True)
class ItemResult:
    item: EvalItem
    variant: str
    repeat: int
    output: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    #: Seconds this run waited for the answer; None for a cached item, which made no call.
    latency_s: float | None = None
    #: For a cached item, the latency measured when the answer was stored.
    cached_latency_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    cached: bool = False
    #: For a judge scorer: the judge's number and raw answer.
    judge: dict[str, Any] | None = None
    #: ``format``, ``content`` or ``error`` for an item that failed (set by the analysis); None if it passed.
    failure: str | None = None
    cost_usd: float | None = None
    #: When the item finished (monotonic), so a report can name the first error that happened.
    finished_at: float = 0.0
    #: A chain's every step: name -> {output, json, routed?}.
    steps: dict[str, Any] = field(default_factory=dict)
    #: Step name -> metric -> score, for the steps the item expects something of.
    step_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The passages the policy's retrieval inserted, best first (from ``x-prefit-context-ids``).
    retrieved: list[Retrieved] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.item.id,
            "variant": self.variant,
            "repeat": self.repeat,
            "input": self.item.input,
            "expected": self.item.expected,
            "output": self.output,
            "scores": self.scores,
            "latency_s": self.latency_s,
            "cached_latency_s": self.cached_latency_s,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "error": self.error,
            "cached": self.cached,
            "metadata": self.item.metadata,
            "failure": self.failure,
            "judge": self.judge,
            "steps": self.steps,
            "expected_steps": self.item.expected_steps,
            "step_scores": self.step_scores,
            "retrieved": [{"id": r.id, "source": r.source} for r in self.retrieved],
        }


def load_dataset(path: Path) -> list[EvalItem]:
    """Read a JSONL dataset. Raises ``ValueError`` naming the line of a bad record."""
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(record, dict) or "input" not in record or "expected" not in record:
            raise ValueError(f"{path}:{number}: a record needs `input` and `expected`")
        metadata = record.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ValueError(f"{path}:{number}: `metadata` must be an object")
        expected_steps = record.get("expected_steps") or {}
        if not isinstance(expected_steps, dict):
            raise ValueError(f"{path}:{number}: `expected_steps` must map step names to expected outputs")
        sources = record.get("expected_sources") or []
        if not isinstance(sources, list) or not all(isinstance(name, str) for name in sources):
            raise ValueError(f"{path}:{number}: `expected_sources` must be a list of file names or chunk ids")
        ident = str(record.get("id", number))
        items.append(
            EvalItem(
                ident,
                record["input"],
                record["expected"],
                metadata,
                source=str(path),
                line=number,
                expected_steps=expected_steps,
                expected_sources=tuple(sources),
            )
        )
    if not items:
        raise ValueError(f"{path}: no records")
    return items


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # so asyncio sets TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    return sock


@contextlib.asynccontextmanager
async def in_process_gateway(config: Config, resources: ResourceHub) -> AsyncIterator[tuple[str, str]]:
    """Serve ``config`` (its layers built against ``resources``) on a loopback port inside this
    process; yields (base URL, admin key)."""
    key = "eval-" + secrets.token_urlsafe(16)
    settings = config.settings
    keys = [*settings.keys, SecretStr(key)] if settings.keys else []
    patched = settings.model_copy(
        update={
            "admin_keys": [*settings.admin_keys, SecretStr(key)],
            "keys": keys,
            "access_log": False,
            "reload": False,
        }
    )
    app = create_app(dataclasses.replace(config, settings=patched), resources)
    sock = _free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the in-process gateway stopped during start-up")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", key
    finally:
        server.should_exit = True
        await task
        sock.close()


class Runner:
    """Runs items against one gateway with bounded concurrency and the on-disk call cache."""

    def __init__(
        self,
        base_url: str,
        key: str | None,
        policy: LoadedPolicy,
        scorers: list[Scorer],
        cache_dir: Path | None,
        concurrency: int,
    ) -> None:
        self.policy = policy
        self.scorers = scorers
        self.cache_dir = cache_dir
        self.limit = asyncio.Semaphore(concurrency)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=600)

    async def close(self) -> None:
        await self.http.aclose()

    def _body(self, item: EvalItem) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.policy.name, "messages": item.messages()}
        if item.metadata:
            body["metadata"] = {k: str(v) for k, v in item.metadata.items()}
        return body

    async def _post(self, path: str, body: dict[str, Any], variant: str, **headers: str) -> httpx.Response:
        return await self.http.post(path, json=body, headers={"x-prefit-variant": variant, **headers})

    async def _cache_key(self, body: dict[str, Any], variant: str, repeat: int) -> str:
        rendered = await self._post("/v1/render", body, variant)
        rendered.raise_for_status()
        data = rendered.json()
        exact = {"upstream": data.get("upstream"), "body": data.get("body"), "steps": data.get("steps")}
        return hashlib.sha256(orjson.dumps(exact, option=orjson.OPT_SORT_KEYS) + f"#{repeat}".encode()).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    async def run_item(self, item: EvalItem, variant: str, repeat: int, use_cache: bool) -> ItemResult:
        result = ItemResult(item, variant, repeat)
        async with self.limit:
            try:
                await self._call(result, use_cache)
            except httpx.HTTPError as exc:
                result.error = f"{exc.__class__.__name__}: {exc}"
            result.finished_at = time.monotonic()
        if result.error is None:
            result.scores = {s.name: _safe_score(s, result.output, item) for s in self.scorers}
        else:
            result.scores = {s.name: 0.0 for s in self.scorers}
        chained = self.policy.variant(variant)
        if chained is not None and chained.chain is not None:  # a variant without steps has none to score
            context = {"id": item.id, "metadata": item.metadata}
            result.step_scores = score_steps(self.scorers, item.expected_steps, result.steps, context)
        return result

    async def _call(self, result: ItemResult, use_cache: bool) -> None:
        body = self._body(result.item)
        path = self._cache_path(await self._cache_key(body, result.variant, result.repeat))
        if use_cache and path is not None and path.is_file():
            _restore(result, orjson.loads(path.read_bytes()))
            result.cached = True
            return
        started = time.perf_counter()
        headers = {"Cache-Control": "no-store"}
        if any(v.chain for v in self.policy.variants):
            headers[STEPS_HEADER] = "include"
        reply = await self._post("/v1/chat/completions", body, result.variant, **headers)
        result.latency_s = time.perf_counter() - started
        data = reply.json()
        steps = data.get("prefit_steps") if isinstance(data, dict) else None
        result.steps = steps if isinstance(steps, dict) else {}
        if reply.status_code >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            result.error = f"{reply.status_code}: {error.get('message', reply.text[:200])}"
        else:
            message = (data.get("choices") or [{}])[0].get("message") or {}
            result.output = message.get("content") or ""
            cost = reply.headers.get("x-prefit-cost-usd")
            result.cost_usd = float(cost) if cost else None
            usage = data.get("usage") or {}
            result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            result.completion_tokens = int(usage.get("completion_tokens") or 0)
            result.retrieved = parse_context_header(reply.headers.get("x-prefit-context-ids"))
        if path is not None and result.error is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(
                orjson.dumps(
                    {
                        "output": result.output,
                        "latency_s": result.latency_s,
                        "prompt_tokens": result.prompt_tokens,
                        "completion_tokens": result.completion_tokens,
                        "cost_usd": result.cost_usd,
                        "steps": result.steps,
                        "retrieved": [[r.id, r.source] for r in result.retrieved],
                    }
                )
            )


def _restore(result: ItemResult, stored: dict[str, Any]) -> None:
    result.output = stored["output"]
    result.cached_latency_s = stored["latency_s"]
    result.prompt_tokens = stored["prompt_tokens"]
    result.completion_tokens = stored["completion_tokens"]
    result.cost_usd = stored.get("cost_usd")
    result.steps = stored.get("steps") or {}
    result.retrieved = [Retrieved(chunk_id, source) for chunk_id, source in stored.get("retrieved", [])]


def _safe_score(scorer: Scorer, output: str, item: EvalItem) -> float:
    try:
        return max(0.0, min(1.0, scorer.score(output, item.expected, {"id": item.id, "metadata": item.metadata})))
    except Exception:
        return 0.0
