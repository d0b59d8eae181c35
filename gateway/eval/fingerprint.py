"""What a stored run was measured with: the variant's prompt version and content hash, the dataset's hash.

The prompt version is what the author says changed; the content hash is what did. It covers the
variant's whole resolved spec (prompt, examples, parameters, model, upstream, layers) and the bytes
of every file the policy reads (prompt, examples and schema files), so an edit that forgot to bump
``prompt.version`` still shows as a new row in ``prefit history``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson

from gateway.config.load import LoadedPolicy, LoadedVariant

__all__ = ["content_hash", "dataset_hash"]


def _file_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def content_hash(policy: LoadedPolicy, variant: LoadedVariant, dataset: Path | None = None) -> str:
    """sha256 over the variant's resolved spec and the policy's files (the eval dataset left out)."""
    digest = hashlib.sha256()
    spec = variant.spec.model_dump(mode="json", exclude={"eval", "description"})
    digest.update(orjson.dumps({"spec": spec, "upstream": variant.upstream}, option=orjson.OPT_SORT_KEYS))
    skip = dataset.resolve() if dataset is not None else None
    for path in sorted(policy.files):
        if path.resolve() == skip:
            continue
        digest.update(str(path.name).encode() + b"\0" + _file_bytes(path) + b"\0")
    return digest.hexdigest()


def dataset_hash(path: Path) -> str:
    return hashlib.sha256(_file_bytes(path)).hexdigest()
