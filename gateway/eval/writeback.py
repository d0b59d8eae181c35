"""``prefit optimize --write``: add the winner to the policy file as variant ``optimized`` (weight 0).

The file is edited as a round trip (ruamel.yaml), so its comments, order and layout stay as the
author wrote them; only the ``variants`` list gains (or replaces) one entry. The winner's examples
go to a JSONL file beside the policy's own examples file (or beside the policy), referenced with
``file:``. The edited configuration is loaded again before the file is kept: if it would not load,
the original text is put back and the error raised.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import orjson
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.util import load_yaml_guess_indent

from gateway.config.load import load_config
from gateway.errors import ConfigError

__all__ = ["VARIANT_NAME", "write_optimized"]

VARIANT_NAME = "optimized"


def _examples_dir(policy_file: Path, data: CommentedMap) -> Path:
    few_shot = data.get("few_shot")
    examples = few_shot.get("examples") if isinstance(few_shot, dict) else None
    if isinstance(examples, str) and examples.startswith("file:"):
        return (policy_file.parent / examples[len("file:") :].strip()).parent
    return policy_file.parent


def _variant(winner: dict[str, Any], examples_ref: str | None, data: CommentedMap) -> CommentedMap:
    entry = CommentedMap()
    entry["name"] = VARIANT_NAME
    entry["weight"] = 0
    if examples_ref is None:
        entry["few_shot"] = None
    else:
        entry["few_shot"] = CommentedMap(examples=examples_ref, max_examples=winner["k"])
    prompt = data.get("prompt")
    current = prompt.get("system") if isinstance(prompt, dict) else None
    if winner.get("system") and winner["system"] != current:
        entry["prompt"] = CommentedMap(system=winner["system"])
    entry.fa.set_flow_style()
    return entry


def write_optimized(policy_file: Path, winner: dict[str, Any], settings_file: Path | None) -> Path | None:
    """Edit ``policy_file`` in place; the examples file written (None for zero examples).

    Raises ``ConfigError`` (with the file restored) when the result would not load."""
    original = policy_file.read_text(encoding="utf-8")
    _, indent, offset = load_yaml_guess_indent(original)
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap the author's lines
    yaml.indent(mapping=offset or 2, sequence=indent or 2, offset=offset or 0)
    data = yaml.load(original)
    examples_path = None
    ref = None
    if winner["examples"]:
        folder = _examples_dir(policy_file, data)
        examples_path = folder / f"{policy_file.stem}-{VARIANT_NAME}.jsonl"
        examples_path.write_bytes(b"".join(orjson.dumps(record) + b"\n" for record in winner["examples"]))
        ref = "file:" + Path(os.path.relpath(examples_path, policy_file.parent)).as_posix()
    variants = data.get("variants")
    if not variants:
        variants = CommentedSeq([CommentedMap(name="default", weight=100)])
        variants[0].fa.set_flow_style()
        data["variants"] = variants
    entry = _variant(winner, ref, data)
    names = [v.get("name") for v in variants]
    if VARIANT_NAME in names:
        variants[names.index(VARIANT_NAME)] = entry
    else:
        variants.append(entry)
    out = io.StringIO()
    yaml.dump(data, out)
    policy_file.write_text(out.getvalue(), encoding="utf-8")
    try:
        load_config(settings_file)
    except ConfigError:
        policy_file.write_text(original, encoding="utf-8")
        raise
    return examples_path
