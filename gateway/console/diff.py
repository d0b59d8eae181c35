"""Line diffs between two prompt versions, as typed lines a template colours."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

__all__ = ["DiffLine", "PromptSource", "prompt_diff"]

Kind = Literal["meta", "hunk", "add", "del", "ctx"]


@dataclass(frozen=True, slots=True)
class PromptSource:
    """One version of a policy's system prompt: where it comes from and its text."""

    label: str
    text: str


@dataclass(frozen=True, slots=True)
class DiffLine:
    kind: Kind
    text: str


def prompt_diff(a: PromptSource, b: PromptSource, context: int = 3) -> list[DiffLine]:
    """The unified diff from ``a`` to ``b``; empty when the texts are the same."""
    lines = difflib.unified_diff(
        a.text.splitlines(), b.text.splitlines(), fromfile=a.label, tofile=b.label, n=context, lineterm=""
    )
    out: list[DiffLine] = []
    for line in lines:
        if line.startswith(("---", "+++")) and not out[2:]:
            out.append(DiffLine("meta", line))
        elif line.startswith("@@"):
            out.append(DiffLine("hunk", line))
        elif line.startswith("+"):
            out.append(DiffLine("add", line))
        elif line.startswith("-"):
            out.append(DiffLine("del", line))
        else:
            out.append(DiffLine("ctx", line))
    return out
