"""Resolve ``file:`` references in policies, safely.

A path resolves relative to the policy file's folder and must stay inside it or inside the
settings file's folder: ``..`` escapes, absolute paths elsewhere and symlinks leading out are load
errors, so a policy can never make the gateway read (and send upstream) an arbitrary file.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config.yaml_source import NotUtf8, decode_utf8
from middleware.base import FieldPath, LayerError, SourceText

__all__ = ["PolicyFiles"]

_PREFIX = "file:"
_MAX_BYTES = 4 * 1024 * 1024


class PolicyFiles:
    """The ``FileSource`` for one policy file; remembers every file it read."""

    def __init__(self, policy_dir: Path, roots: list[Path], display_root: Path) -> None:
        self.policy_dir = policy_dir
        self.roots = [root.resolve() for root in roots]
        self.display_root = display_root.resolve()
        self.read_files: list[Path] = []

    def _display(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.display_root))
        except ValueError:
            return str(path)

    def resolve(self, field: FieldPath, reference: str) -> Path:
        """The file ``reference`` names. Raises ``LayerError`` when it escapes or does not exist."""
        relative = reference[len(_PREFIX) :].strip()
        if not relative:
            raise LayerError(field, "file: needs a path")
        target = (self.policy_dir / relative).resolve()
        if not any(target.is_relative_to(root) for root in self.roots):
            raise LayerError(field, f"{relative} is outside the policy's folder")
        if not target.is_file():
            raise LayerError(field, f"file not found: {relative}")
        if target.stat().st_size > _MAX_BYTES:
            raise LayerError(field, f"{relative} is larger than {_MAX_BYTES} bytes")
        return target

    def read(self, field: FieldPath, value: str) -> SourceText:
        if not value.startswith(_PREFIX):
            return SourceText(value)
        target = self.resolve(field, value)
        try:
            text = decode_utf8(target.read_bytes())
        except OSError as exc:
            raise LayerError(field, f"cannot read {value[len(_PREFIX) :]}: {exc}") from None
        except NotUtf8 as exc:
            raise LayerError(field, exc.message, file=self._display(target), line=exc.line, column=exc.column) from None
        self.read_files.append(target)
        return SourceText(text, self._display(target))
