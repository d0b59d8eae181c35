"""The Responses API request on the wire: parsed once at the edge, like ``gateway.wire``'s chat body.

Only the fields Prefit acts on are typed; every other field the client sent is kept
(``extra="allow"``) so a native Responses upstream still receives it. Replies and stream events stay
plain dicts, as chat replies do.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError

from gateway.errors import InvalidRequest
from gateway.wire import invalid_request

__all__ = ["STATEFUL_FIELDS", "ResponsesRequest", "parse_responses_request"]

#: Fields that only a server keeping earlier responses can honour.
STATEFUL_FIELDS = ("previous_response_id", "conversation")


class ResponsesRequest(BaseModel):
    """The body of ``POST /v1/responses``."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr
    input: StrictStr | list[dict[str, Any]]
    instructions: StrictStr | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    max_output_tokens: int | None = None
    stream: StrictBool | None = None
    store: StrictBool | None = None
    previous_response_id: StrictStr | None = None
    user: StrictStr | None = None
    metadata: dict[str, Any] | None = None


def parse_responses_request(raw: bytes) -> ResponsesRequest:
    """Parse and check a Responses body. Raises ``InvalidRequest`` naming the offending ``param``."""
    try:
        return ResponsesRequest.model_validate_json(raw)
    except ValidationError as exc:
        error: InvalidRequest = invalid_request(exc)
        raise error from None
