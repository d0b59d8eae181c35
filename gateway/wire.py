"""OpenAI wire models: requests are parsed once at the edge into these, replies stay plain dicts.

Requests keep every field the client sent (``extra="allow"``) so that a field Prefit does not know
about still reaches the upstream unchanged. Only the fields Prefit acts on are typed and checked.
Replies and stream chunks stay ``dict`` because Prefit forwards them nearly untouched and parsing
them into models would cost time on every chunk.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import orjson
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError

from gateway.errors import InvalidRequest

__all__ = [
    "ChatChunk",
    "ChatCompletion",
    "ChatMessage",
    "ChatRequest",
    "ModelRequest",
    "dump_body",
    "get_param",
    "invalid_request",
    "loads",
    "parse_chat_request",
    "parse_model_request",
]

ChatCompletion: TypeAlias = dict[str, Any]
ChatChunk: TypeAlias = dict[str, Any]


class ChatMessage(BaseModel):
    """One message; content may be text, a list of parts, or absent (tool calls)."""

    model_config = ConfigDict(extra="allow")

    role: StrictStr
    content: StrictStr | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr
    messages: list[ChatMessage]
    stream: StrictBool | None = None
    stream_options: dict[str, Any] | None = None
    user: StrictStr | None = None
    metadata: dict[str, Any] | None = None


class ModelRequest(BaseModel):
    """Any other body that names a model (completions, embeddings): only ``model`` is checked."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr
    stream: StrictBool | None = None


_UNION_MEMBER_TAGS = {"str", "int", "float", "bool", "none", "function-after", "function-plain"}


def _param_of(loc: tuple[int | str, ...]) -> str:
    """``("messages", 0, "role")`` -> ``"messages[0].role"``, the way OpenAI names params.

    pydantic adds the failing member of a union to ``loc`` (``content.str``); clients never sent
    such a key, so those tags are dropped.
    """
    out = ""
    for part in loc:
        if isinstance(part, str) and (part in _UNION_MEMBER_TAGS or "[" in part):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def invalid_request(exc: ValidationError) -> InvalidRequest:
    """The client's mistake in ``exc`` as OpenAI names it (``param``, ``code``)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        return InvalidRequest(
            "We could not parse the JSON body of your request. Send a valid JSON object.",
            code="invalid_json",
        )
    if first["type"] == "model_type" and not first["loc"]:
        return InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    param = _param_of(first["loc"])
    if first["type"] == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    return InvalidRequest(f"Invalid type for '{param}': {first['msg']}.", param=param, code="invalid_type")


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Parse and check a chat body. Raises ``InvalidRequest`` naming the offending ``param``."""
    try:
        return ChatRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_request(exc) from None


def parse_model_request(raw: bytes) -> ModelRequest:
    """Parse a body that must name a model. Raises ``InvalidRequest``."""
    try:
        return ModelRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_request(exc) from None


def dump_body(body: BaseModel) -> bytes:
    """Serialise a request for the upstream: what the client set plus what layers set, nothing more."""
    return body.model_dump_json(exclude_unset=True).encode()


def get_param(body: BaseModel, name: str) -> Any:
    """A request field by name, declared or extra, None when absent.

    ``getattr`` on an ``extra="allow"`` model falls back to pydantic's slow ``__getattr__`` for
    every field the client did not send (microseconds each, on every request); this does not.
    """
    if name in type(body).model_fields:
        return body.__dict__.get(name)
    extra = body.__pydantic_extra__
    return extra.get(name) if extra else None


def loads(raw: bytes | str) -> Any:
    """JSON decoding used on the hot path (orjson)."""
    return orjson.loads(raw)
