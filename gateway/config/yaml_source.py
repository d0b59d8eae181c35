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

__all__ = ["Located", "NotUtf8", "Position", "YamlProblem", "decode_utf8", "expand_env", "parse_yaml", "read_yaml"]

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
        """An issue at ``path``; in an empty document, at its start."""
        pos = self.position(path, key=key) or Position(1, 1)
        return ConfigIssue(self.file, message, line=pos.line, column=pos.column, field=_dotted(path))


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
        data = path.read_bytes()
    except OSError as exc:
        raise YamlProblem(ConfigIssue(display_name, f"cannot read file: {exc.strerror or exc}")) from None
    try:
        text = decode_utf8(data)
    except NotUtf8 as exc:
        raise YamlProblem(ConfigIssue(display_name, exc.message, line=exc.line, column=exc.column)) from None
    return parse_yaml(text, display_name, env)


class NotUtf8(ValueError):
    """Bytes that are not UTF-8; names the line and column (in characters) of the first bad byte."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def decode_utf8(data: bytes) -> str:
    """``data`` as text. Raises ``NotUtf8`` pointing at the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8")) + 1
        bad = data[exc.start : exc.end].hex()
        raise NotUtf8(f"not UTF-8: byte 0x{bad} ({exc.reason})", line, column) from None


def parse_yaml(text: str, display_name: str, env: Mapping[str, str] | None = None) -> Located:
    """Parse YAML text. Raises ``YamlProblem`` with the line and column of a syntax error."""
    located = Located(display_name, None)
    hidden, refs = _hide_env_refs(text)
    try:
        node = yaml.compose(hidden, Loader=yaml.SafeLoader)
        builder = _Builder(located, os.environ if env is None else env, refs)
        located.data = None if node is None else builder.build(node, ())
    except yaml.MarkedYAMLError as exc:
        message = " ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        pos = _error_position(exc, hidden)
        line, column = (pos.line, pos.column) if pos else (None, None)
        raise YamlProblem(ConfigIssue(display_name, f"invalid YAML: {message}", line=line, column=column)) from None
    except yaml.reader.ReaderError as exc:
        pos = _position_at(hidden, exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        message = f"invalid YAML: unacceptable character #x{code:04x}: {exc.reason}"
        raise YamlProblem(ConfigIssue(display_name, message, line=pos.line, column=pos.column)) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(ConfigIssue(display_name, f"invalid YAML: {exc}")) from None
    return located


def _error_position(exc: yaml.MarkedYAMLError, text: str) -> Position | None:
    """Where the mistake is, which is not always where PyYAML noticed it.

    A scanner error's context mark is the token it could not finish (the opening quote of an
    unclosed string, a key without its colon); the problem mark is only where it gave up, often the
    next line or the end of the file. An error found at the end of the file belongs to the
    construct left open (the context mark) when there is one, else to the file's last line.
    """
    problem, context = exc.problem_mark, exc.context_mark
    mark = problem
    if context is not None and (
        problem is None or problem.index >= len(text) or isinstance(exc, yaml.scanner.ScannerError)
    ):
        mark = context
    if mark is None:
        return None
    if mark.index >= len(text) and text.endswith("\n"):
        return _position_at(text, len(text) - 1)
    return Position(mark.line + 1, mark.column + 1)


def _position_at(text: str, index: int) -> Position:
    line_start = text.rfind("\n", 0, index) + 1
    return Position(text.count("\n", 0, index) + 1, index - line_start + 1)


class YamlProblem(Exception):
    """A file that is not readable YAML; carries the one issue to report."""

    def __init__(self, issue: ConfigIssue) -> None:
        super().__init__(str(issue))
        self.issue = issue
