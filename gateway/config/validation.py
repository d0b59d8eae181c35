"""A located YAML document against a pydantic model: every error as ``file:line:column: path:
message``, unknown keys with the close match."""

from __future__ import annotations

import logging
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.config.yaml_source import Located
from gateway.errors import ConfigIssue, unknown_key

__all__ = ["Model", "display_path", "error_message", "validate_located"]

log = logging.getLogger(__name__)


Model = TypeVar("Model", bound=BaseModel)


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def validate_located(model: type[Model], located: Located, issues: list[ConfigIssue]) -> Model | None:
    """Validate YAML data into ``model``, turning each pydantic error into a located issue."""
    data = located.data if located.data is not None else {}
    if not isinstance(data, dict):
        issues.append(ConfigIssue(located.file, "the file must hold a mapping of keys", line=1, column=1))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            loc = tuple(error["loc"])
            message = error_message(error, model)
            issues.append(located.issue(loc, message, key=error["type"] == "extra_forbidden"))
        return None


def error_message(error: Any, model: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        loc = tuple(error["loc"])
        return unknown_key(str(loc[-1]), _keys_at(model, loc[:-1]))
    if kind == "missing":
        return "required key is missing"
    message: str = error["msg"]
    return message.removeprefix("Value error, ")


def _keys_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The keys allowed in the mapping at ``loc`` of ``model``'s data (none if it is not a model)."""
    current: Any = model
    for part in loc:
        current = _child(current, part)
    found = _model_in(current)
    return list(found.model_fields) if found is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """``annotation`` if it is a model, else the first model among a union's members."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next((m for m in map(_model_in, typing.get_args(annotation)) if m is not None), None)
    return None


def _child(annotation: Any, part: str | int) -> Any:
    """The type of ``part`` inside a value of type ``annotation``; a union is searched member by member."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found = annotation.model_fields.get(str(part))
        return found.annotation if found is not None else None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple) and isinstance(part, int) and args:
        return args[0]
    if origin is dict and isinstance(part, str) and len(args) == 2:
        return args[1]
    if origin in (typing.Union, types.UnionType):
        members = [m for m in (_child(arg, part) for arg in args) if m is not None]
        # pydantic names the union member in the error's location (``list[ExampleSpec]``): skip it.
        return members[0] if members else annotation
    return None
