"""Read YAML so that every value remembers its line and column, and expand ``${VAR}`` in scalars.

Config errors must point at ``file:line:column``. PyYAML's composed node tree keeps marks, so this
module builds plain Python data from that tree and, beside it, a map from each value's path
(``("upstreams", "openai", "timeout_s")``) to where it stands. Environment variables are expanded
in string scalars after parsing, so a variable's value can never change the YAML structure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ConfigIssue

__all__ = ["Located", "Position", "YamlProblem", "expand_env", "parse_yaml", "read_yaml"]

Path_ = tuple[int | str, ...]
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class Position:
    line: int
    column: int


@dataclass(slots=True)
class Located:
    """A YAML document as data plus the position of every key and value in it."""

    file: str
    data: Any
    values: dict[Path_, Position] = field(default_factory=dict)
    keys: dict[Path_, Position] = field(default_factory=dict)
    unset_env: set[str] = field(default_factory=set)
    #: For each value that used ``${VAR}`` without a default: the variables that gave nothing, as
    #: ``{name: "unset" | "empty"}`` (so ``/readyz`` can say why an upstream has no key).
    blank_env: dict[Path_, dict[str, str]] = field(default_factory=dict)

    def position(self, path: Path_, *, key: bool = False) -> Position | None:
        """Where ``path`` (or its nearest existing parent) stands; with ``key``, prefer the key's mark."""
        probe = tuple(path)
        while True:
            if key and probe in self.keys:
                return self.keys[probe]
            if probe in self.values:
                return self.values[probe]
            if not probe:
                return None
            probe = probe[:-1]

    def issue(self, path: Path_, message: str, *, key: bool = False) -> ConfigIssue:
        pos = self.position(path, key=key)
        dotted = _dotted(path)
        if pos is None:
            return ConfigIssue(self.file, message, field=dotted)
        return ConfigIssue(self.file, message, line=pos.line, column=pos.column, field=dotted)


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def expand_env(text: str, env: Mapping[str, str], unset: set[str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; an unset variable without default becomes ''."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                unset.add(name)
                return ""
            return default
        return value

    return _ENV_PATTERN.sub(replace, text)


def _mark(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


_SLOT_OPEN, _SLOT_CLOSE, _SLOT_PAD = "\ue000", "\ue001", "\ue002"
_SLOT_PATTERN = re.compile(f"{_SLOT_OPEN}([0-9]+){_SLOT_CLOSE}{_SLOT_PAD}*")


def _hide_env_refs(text: str) -> tuple[str, list[str]]:
    """Swap each ``${...}`` for a same-length placeholder YAML reads as plain text.

    ``{api_key: ${KEY}}`` is not valid YAML (``{`` is a flow indicator), yet it is the form the
    contract uses; placeholders keep the structure intact and the columns where they were.
    """
    refs: list[str] = []

    def hide(match: re.Match[str]) -> str:
        refs.append(match.group(0))
        slot = f"{_SLOT_OPEN}{len(refs) - 1}{_SLOT_CLOSE}"
        return slot + _SLOT_PAD * max(0, len(match.group(0)) - len(slot))

    return _ENV_PATTERN.sub(hide, text), refs


class _Builder:
    def __init__(self, located: Located, env: Mapping[str, str], refs: list[str]) -> None:
        self.located = located
        self.env = env
        self.refs = refs
        self.constructor = yaml.constructor.SafeConstructor()

    def _expand(self, value: str, path: Path_) -> str:
        restored = _SLOT_PATTERN.sub(lambda m: self.refs[int(m.group(1))], value)
        blank = {
            match.group(1): "unset" if match.group(1) not in self.env else "empty"
            for match in _ENV_PATTERN.finditer(restored)
            if match.group(2) is None and not self.env.get(match.group(1))
        }
        if blank:
            self.located.blank_env[path] = blank
        return expand_env(restored, self.env, self.located.unset_env)

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.located.values[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool) and key is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, "a mapping key must be a plain scalar", key_node.start_mark
                    )
                if key in out:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                child = (*path, key if isinstance(key, int) else str(key))
                self.located.keys[child] = _mark(key_node)
                out[key if isinstance(key, str) else str(key)] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        value = self.constructor.construct_object(node, deep=True)
        if isinstance(value, str) and _SLOT_OPEN in value:
            value = self._expand(value, path)
        return value


def read_yaml(path: Path, display_name: str, env: Mapping[str, str] | None = None) -> Located:
    """Read and parse one YAML file. Raises ``YamlProblem`` naming the file (and line, if any)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise YamlProblem(ConfigIssue(display_name, f"cannot read file: {reason}")) from None
    return parse_yaml(text, display_name, env)


def parse_yaml(text: str, display_name: str, env: Mapping[str, str] | None = None) -> Located:
    """Parse YAML text. Raises ``YamlProblem`` with the line and column of a syntax error."""
    located = Located(display_name, None)
    try:
        hidden, refs = _hide_env_refs(text)
        node = yaml.compose(hidden, Loader=yaml.SafeLoader)
        builder = _Builder(located, os.environ if env is None else env, refs)
        located.data = None if node is None else builder.build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        raise YamlProblem(ConfigIssue(display_name, f"invalid YAML: {message}", line=line, column=column)) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(ConfigIssue(display_name, f"invalid YAML: {exc}")) from None
    return located


class YamlProblem(Exception):
    """A file that is not readable YAML; carries the one issue to report."""

    def __init__(self, issue: ConfigIssue) -> None:
        super().__init__(str(issue))
        self.issue = issue
