"""A console gateway's files, a saved eval run, and logging in with a plain httpx client."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import orjson

ADMIN_KEY = "admin-key-7c1d"
GATEWAY_KEY = "team-key-3a9e"
RUN_NAME = "ab-20260101T120000Z.json"


def eval_run(cost: bool = True) -> dict[str, object]:
    def variant(name: str, score: float, interval: list[float], items: list[tuple[str, float]]) -> dict[str, object]:
        out: dict[str, object] = {
            "n": len(items),
            "scores": {"exact_match": score, "json_valid": 1.0},
            "interval": interval,
            "p50_s": 0.42,
            "p95_s": 1.3,
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "errors": 0,
            "cached": 1,
            "items": [
                {
                    "id": item,
                    "variant": name,
                    "repeat": 0,
                    "input": f"question {item}",
                    "expected": "billing",
                    "output": "billing" if ok else "<script>alert(1)</script>",
                    "scores": {"exact_match": ok, "json_valid": 1.0},
                    "latency_s": 0.4,
                    "prompt_tokens": 100,
                    "completion_tokens": 25,
                    "error": None,
                    "cached": False,
                }
                for item, ok in items
            ],
        }
        if cost:
            out["cost_usd"] = 0.0123 if name == "control" else 0.0456
        return out

    return {
        "policy": "ab",
        "dataset": "evals/ab.jsonl",
        "variants": {
            "control": variant("control", 0.75, [0.41, 0.93], [("i1", 1.0), ("i2", 1.0), ("i3", 1.0), ("i4", 0.0)]),
            "treatment": variant("treatment", 0.5, [0.15, 0.85], [("i1", 1.0), ("i2", 0.0), ("i3", 1.0), ("i4", 0.0)]),
        },
        "comparisons": [
            {
                "variant": "treatment",
                "baseline": "control",
                "metric": "exact_match",
                "better": 0,
                "worse": 1,
                "p_value": 1.0,
                "regressed": ["i2"],
            }
        ],
        "gate_failures": ["treatment: exact_match = 0.500, gate >=0.7"],
        "passed": False,
        "saved_at": 1767268800.0,
    }


def chain_run() -> dict[str, object]:
    """A stored run of a chain: every item carries what each step said, and step scores."""
    items = [
        {
            "id": "t1",
            "input": "Ann loved the cafe; Bob hated the bus.",
            "expected": "mixed",
            "output": "mixed",
            "scores": {"exact_match": 1.0},
            "error": None,
            "steps": {
                "extract": {"output": '{"entities": ["Ann", "Bob"]}', "json": {"entities": ["Ann", "Bob"]}},
                "classify": {"output": "positive\nnegative", "json": ["positive", "negative"]},
                "summarise": {"output": "mixed", "json": None},
            },
            "expected_steps": {"extract": ["Ann", "Bob"]},
            "step_scores": {"extract": {"exact_match": 1.0}},
        }
    ]
    variant = {"n": 1, "scores": {"exact_match": 1.0}, "interval": [0.21, 1.0], "items": items,
               "step_scores": {"extract": {"exact_match": 1.0}}}  # fmt: skip
    return {"policy": "ab", "dataset": "evals/chain.jsonl", "variants": {"chain": variant}, "saved_at": 1767268801.0}


def console_files(upstream_url: str, *, admin: bool = True) -> dict[str, str]:
    keys = f"admin_keys: [{ADMIN_KEY}]\nkeys: [{GATEWAY_KEY}]\n" if admin else ""
    return {
        "prefit.yaml": f"upstreams:\n  fake: {{base_url: {upstream_url}, api_key: sk-up}}\n"
        f"default_upstream: fake\ncache: {{enabled: false}}\n{keys}"
        "prices: {gpt-4o-mini: {input: 1000, output: 2000}}\n",
        "policies/ab.yaml": """
        description: Support answers, prompt v2 against v3
        upstream: fake
        upstream_model: gpt-4o-mini
        prompt: {version: v2, system: file:prompts/ab/v2.md, vars: {company: Acme}}
        few_shot:
          examples:
            - {input: "card charged twice", output: billing}
        variants:
          - {name: control, weight: 70}
          - {name: treatment, weight: 30, upstream_model: gpt-4o, prompt: {version: v3, system: file:prompts/ab/v3.md}}
        """,
        "policies/prompts/ab/v2.md": "You help {{ company }} customers.\nBe brief.\n",
        "policies/prompts/ab/v3.md": "You help {{ company }} customers.\nBe brief and kind.\nNever guess.\n",
        "policies/plain.yaml": "upstream: fake\nupstream_model: gpt-4o-mini\n"
        "retrieval: {collection: docs, top_k: 3, min_score: 0.4}\n",
        f".prefit/eval-runs/{RUN_NAME}": orjson.dumps(eval_run(), option=orjson.OPT_INDENT_2).decode(),
        ".prefit/eval-runs/ab-20251231T000000Z.json": orjson.dumps(eval_run(cost=False)).decode(),
        ".prefit/eval-runs/ab-chain-20260101T000001Z.json": orjson.dumps(chain_run()).decode(),
    }


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def page_token(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert found, "no CSRF meta tag in the page"
    return found.group(1)


def login(url: str, key: str = ADMIN_KEY) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=10)
    form = client.get("/console/login")
    reply = client.post("/console/login", data={"csrf": form_token(form.text), "key": key, "next": "/console"})
    assert reply.status_code == 303, reply.text
    assert reply.headers["location"] == "/console"
    return client


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll with a generous guard (reload speed is not what these tests measure)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
