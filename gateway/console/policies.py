"""What the console shows about loaded policies: per-variant summaries and prompt versions.

Everything here reads the loaded, immutable ``Config``; the only file reads are prompt versions
for the diff (the prompt files a policy already read, and their siblings with the same suffix),
done in a worker thread by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config.load import LoadedPolicy, LoadedVariant
from gateway.console.diff import PromptSource
from middleware.few_shot import FewShotLayer
from middleware.prompt import PromptLayer

__all__ = ["LAYER_KEYS", "VariantView", "prompt_sources", "variant_view"]

#: Layer classes by the policy key they implement.
LAYER_KEYS = {
    "ParamsLayer": "params",
    "PromptLayer": "prompt",
    "FewShotLayer": "few_shot",
    "RetrievalLayer": "retrieval",
    "OutputLayer": "output",
    "ReasoningLayer": "reasoning",
}
_FILE = "file:"
_MAX_SIBLINGS = 20
_MAX_PROMPT_BYTES = 256 * 1024


@dataclass(slots=True)
class VariantView:
    name: str
    weight: float
    share: float
    upstream: str
    upstream_model: str
    prompt_version: str
    prompt_hash: str
    layers: list[str]
    steps: list[tuple[str, str]]
    system_prompt: str | None
    prompt_is_per_request: bool
    prompt_source: str | None
    examples: list[tuple[str, str]]
    dynamic_examples: dict[str, Any] | None
    retrieval: dict[str, Any] | None
    output: dict[str, Any] | None
    params: dict[str, Any] = field(default_factory=dict)


def layer_names(variant: LoadedVariant) -> list[str]:
    names = [LAYER_KEYS.get(type(layer).__name__, type(layer).__name__) for layer in variant.pipeline.layers]
    if variant.chain is not None:
        names.append("steps")
    return names


def variant_view(policy: LoadedPolicy, variant: LoadedVariant) -> VariantView:
    total = sum(v.weight for v in policy.variants)
    spec = variant.spec
    prompt = next((layer for layer in variant.pipeline.layers if isinstance(layer, PromptLayer)), None)
    few_shot = next((layer for layer in variant.pipeline.layers if isinstance(layer, FewShotLayer)), None)
    system = spec.prompt.system if spec.prompt is not None else None
    examples = [(turn.role, _text(turn.content)) for turn in few_shot.turns] if few_shot is not None else []
    output = spec.output.model_dump(exclude={"json_schema"}) if spec.output is not None else None
    if output is not None and spec.output is not None:
        schema = spec.output.json_schema
        output["json_schema"] = schema if isinstance(schema, str) else "(inline schema)"
    steps = (
        [(step.name, step.model or ("(routed)" if step.route else "(inline prompt)")) for step in variant.chain.steps]
        if variant.chain
        else []
    )
    return VariantView(
        name=variant.name,
        weight=variant.weight,
        share=(variant.weight / total) if total else 0.0,
        upstream=variant.upstream,
        upstream_model=variant.upstream_model,
        prompt_version=variant.prompt_version,
        prompt_hash=variant.prompt_hash,
        layers=layer_names(variant),
        steps=steps,
        system_prompt=prompt.static_text if prompt is not None else None,
        prompt_is_per_request=prompt is not None and prompt.template is not None and prompt.static_text is None,
        prompt_source=system,
        examples=examples,
        dynamic_examples=spec.few_shot.dynamic.model_dump() if spec.few_shot and spec.few_shot.dynamic else None,
        retrieval=spec.retrieval.model_dump() if spec.retrieval is not None else None,
        output=output,
        params={**spec.params, **spec.force},
    )


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _read(path: Path) -> str | None:
    try:
        if path.stat().st_size > _MAX_PROMPT_BYTES:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _prompt_file(policy: LoadedPolicy, reference: str) -> Path | None:
    """The already-read file a ``file:`` prompt reference names."""
    relative = Path(reference[len(_FILE) :].strip())
    for path in policy.files:
        if path.parts[-len(relative.parts) :] == relative.parts:
            return path
    return None


def prompt_sources(policy: LoadedPolicy) -> list[PromptSource]:
    """Distinct system prompt versions: each variant's, then other files beside a prompt file.

    Blocking (reads files): call it from a worker thread.
    """
    sources: list[PromptSource] = []
    seen_texts: set[str] = set()
    seen_files: set[Path] = set()
    folders: list[tuple[Path, str]] = []

    def add(label: str, text: str) -> None:
        if text not in seen_texts:
            seen_texts.add(text)
            sources.append(PromptSource(label, text))

    for variant in policy.variants:
        spec = variant.spec.prompt
        if spec is None or spec.system is None:
            continue
        label = f"{variant.name} ({variant.prompt_version})"
        if not spec.system.startswith(_FILE):
            add(label, spec.system)
            continue
        path = _prompt_file(policy, spec.system)
        text = _read(path) if path is not None else None
        if path is None or text is None:
            continue
        seen_files.add(path)
        add(f"{label}: {path.name}", text)
        folders.append((path.parent, path.suffix))
    for folder, suffix in folders:
        try:
            siblings = sorted(p for p in folder.iterdir() if p.suffix == suffix and p.is_file())
        except OSError:
            continue
        for path in siblings[:_MAX_SIBLINGS]:
            if path not in seen_files:
                seen_files.add(path)
                text = _read(path)
                if text is not None:
                    add(f"file {folder.name}/{path.name}", text)
    return sources
