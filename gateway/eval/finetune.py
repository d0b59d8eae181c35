"""``prefit export-finetune``: OpenAI chat fine-tuning JSONL from training items, never the test set.

Each line is one item rendered through the variant's own prompt (the very layers serving runs, by
``render_request``) with its few-shot examples removed, since the fine-tune is to learn them, then
the expected answer as the assistant turn. Items of the held-out ``eval.dataset`` (same id or same
input) are left out and counted. Every line is checked against the fine-tuning format before the
file is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.config.files import PolicyFiles
from gateway.config.load import Config, LoadedPolicy, LoadedVariant
from gateway.eval.candidates import Arm, load_with_arms, policy_path
from gateway.eval.run import _dataset_path
from gateway.eval.runner import EvalItem, load_dataset
from gateway.eval.search import overlapping
from gateway.retrieval.resources import ResourceHub
from gateway.serving.render import render_request
from gateway.wire import ChatRequest
from middleware.base import LayerError

__all__ = ["ExportSummary", "export_finetune", "policy_examples", "validate_line"]

_ROLES = {"system", "user", "assistant"}
_ARM = "finetune-export"


@dataclass(frozen=True, slots=True)
class ExportSummary:
    variant: str
    source: str
    written: int
    excluded_heldout: int
    out: Path


def validate_line(record: dict[str, Any]) -> str | None:
    """Why ``record`` is not a valid chat fine-tuning example, or None when it is."""
    messages = record.get("messages")
    if set(record) != {"messages"} or not isinstance(messages, list) or not messages:
        return "a line needs exactly one key, `messages`, a non-empty list"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return f"message {index}: role must be one of {sorted(_ROLES)}"
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            return f"message {index} ({message['role']}): content must be non-empty text"
    if not any(message["role"] == "assistant" for message in messages):
        return "no assistant message to learn from"
    return None


def policy_examples(policy: LoadedPolicy, variant: LoadedVariant, config: Config) -> list[EvalItem]:
    few_shot = variant.spec.few_shot
    if few_shot is None:
        raise ValueError(f"variant {variant.name!r} has no few-shot examples; pass --train")
    value = few_shot.examples
    if isinstance(value, list):
        return [EvalItem(f"example-{n}", e.input, e.output) for n, e in enumerate(value, 1)]
    source = policy_path(policy)
    files = PolicyFiles(source.parent, [source.parent, config.base_dir], Path.cwd())
    try:
        path = files.resolve(("few_shot", "examples"), value)
    except LayerError as exc:
        raise ValueError(f"{policy.source}: few_shot.examples: {exc.message}") from None
    records = [orjson.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [EvalItem(f"example-{n}", r["input"], r["output"]) for n, r in enumerate(records, 1)]


def _answer(expected: Any) -> str:
    return expected if isinstance(expected, str) else orjson.dumps(expected).decode()


async def _line(policy: LoadedPolicy, variant: LoadedVariant, item: EvalItem, config: Config) -> dict[str, Any]:
    chat = ChatRequest.model_validate({"model": policy.name, "messages": item.messages()})
    rendered = await render_request(policy, variant, chat, f"export-{item.id}", variant.upstream, config.policies)
    messages = [{"role": m.get("role"), "content": m.get("content")} for m in rendered["body"]["messages"]]
    return {"messages": [*messages, {"role": "assistant", "content": _answer(item.expected)}]}


def export_finetune(
    config: Config, policy_name: str, variant_name: str | None, train: Path | None, out: Path, hub: ResourceHub
) -> ExportSummary:
    """Write the file; raises ``ValueError`` for bad input or a line that fails the format."""
    variant, lines, excluded = asyncio.run(_render_all(config, policy_name, variant_name, train, hub))
    out.write_bytes(b"".join(line + b"\n" for line in lines))
    source = str(train) if train else f"{config.policies[policy_name].source} few_shot.examples"
    return ExportSummary(variant, source, len(lines), excluded, out)


async def _render_all(
    config: Config, policy_name: str, variant_name: str | None, train: Path | None, hub: ResourceHub
) -> tuple[str, list[bytes], int]:
    policy = config.policies.get(policy_name)
    if policy is None:
        raise ValueError(f"no policy serves {policy_name!r}")
    chosen = policy.variant(variant_name) if variant_name else max(policy.variants, key=lambda v: v.weight)
    if chosen is None:
        raise ValueError(f"{policy.name!r} has no variant {variant_name!r}")
    if chosen.chain is not None:
        raise ValueError(f"{policy.name!r} is a chain: it has no single prompt to fine-tune")
    items: Sequence[EvalItem] = load_dataset(train) if train else policy_examples(policy, chosen, config)
    excluded: set[str] = set()
    if policy.spec.eval is not None:
        excluded = set(overlapping(items, load_dataset(_dataset_path(policy, None, config.base_dir))))
    kept = [item for item in items if item.id not in excluded]
    loaded = load_with_arms(config, policy, [Arm(_ARM, (), based_on=chosen.name)], hub).policies[policy.name]
    bare = loaded.variant(_ARM)
    assert bare is not None
    lines = []
    for item in kept:
        record = await _line(loaded, bare, item, config)
        problem = validate_line(record)
        if problem is not None:
            raise ValueError(f"item {item.id}: {problem}")
        lines.append(orjson.dumps(record))
    return chosen.name, lines, len(excluded)
