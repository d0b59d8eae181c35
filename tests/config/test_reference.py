"""The committed reference pages match the schemas in the code (run `prefit docs` after a schema change)."""

from __future__ import annotations

from pathlib import Path

from gateway.config.reference import reference_files

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_committed_reference_is_current() -> None:
    for name, text in reference_files().items():
        committed = DOCS / name
        assert committed.is_file(), f"docs/{name} is missing: run `prefit docs`"
        assert committed.read_text(encoding="utf-8") == text, f"docs/{name} is stale: run `prefit docs`"
