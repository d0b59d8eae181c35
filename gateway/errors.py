"""Prefit's one error hierarchy, turned into HTTP in exactly one place (``gateway.serving.http``).

::

    PrefitError                     status  type                    code
    ├── InvalidRequest              400     invalid_request_error   (varies)
    │   ├── BodyTooLarge            413     invalid_request_error   request_too_large
    │   └── MethodNotAllowed        405     invalid_request_error   method_not_allowed
    ├── Unauthenticated             401     authentication_error    invalid_api_key
    ├── NotFound                    404     invalid_request_error   not_found
    │   └── ModelNotFound           404     invalid_request_error   model_not_found
    ├── RateLimited                 429     rate_limit_error        rate_limit_exceeded
    ├── PermissionDenied            403     permission_error        permission_denied
    ├── ServiceUnavailable          503     server_error            service_unavailable
    ├── UpstreamError               502     upstream_error          upstream_error
    │   ├── UpstreamUnreachable     502     upstream_error          upstream_unreachable
    │   │   └── CircuitOpen         502     upstream_error          upstream_circuit_open
    │   ├── UpstreamPayload         502     upstream_error          upstream_payload
    │   ├── UpstreamTimeout         504     upstream_error          upstream_timeout
    │   └── UpstreamStatus          (the upstream's own status and body, passed through)
    ├── OutputInvalid               502     output_error            output_invalid
    └── StepFailed                  (its cause's status, type and code; the message names the step)

    ConfigError                     never HTTP: a load error naming file, line and field

Messages never carry keys: the upstream client scrubs them before raising.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "BodyTooLarge",
    "CircuitOpen",
    "ConfigError",
    "ConfigIssue",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "NotFound",
    "OutputInvalid",
    "PermissionDenied",
    "PrefitError",
    "RateLimited",
    "RouteUnmatched",
    "ServiceUnavailable",
    "StepFailed",
    "Unauthenticated",
    "UpstreamError",
    "UpstreamPayload",
    "UpstreamStatus",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "unknown_key",
]


class PrefitError(Exception):
    """An error a client may see, with its OpenAI-style fields."""

    status: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def to_body(self) -> dict[str, Any]:
        """The ``{"error": {...}}`` body OpenAI clients parse."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(PrefitError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class MethodNotAllowed(InvalidRequest):
    """One of the gateway's own endpoints called with a method (or a path form) it does not serve."""

    status = 405
    code = "method_not_allowed"


class Unauthenticated(PrefitError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(PrefitError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class OutputInvalid(PrefitError):
    """The answer did not meet the policy's output format, and the policy says to fail."""

    status = 502
    type = "output_error"
    code = "output_invalid"


class RouteUnmatched(OutputInvalid):
    """A routing step's value has no case and the route no default.

    502, not 4xx: the value is normally an earlier step's model answer, so it is an answer the
    gateway could not use (like ``output_invalid``), not a mistake in the client's request."""

    code = "route_unmatched"


class NotFound(PrefitError):
    """No endpoint and no upstream serves this path."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class RateLimited(PrefitError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ServiceUnavailable(PrefitError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class UpstreamError(PrefitError):
    """The upstream could not give an answer; ``reason`` is a bounded metrics label."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    reason = "error"


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"
    reason = "connect"


class CircuitOpen(UpstreamUnreachable):
    """The upstream failed too often lately; calls fail fast until it has had time to recover."""

    code = "upstream_circuit_open"
    reason = "circuit_open"


class UpstreamPayload(UpstreamError):
    """The upstream broke off its answer part-way (a truncated or malformed body)."""

    code = "upstream_payload"
    reason = "payload"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    reason = "timeout"


class UpstreamStatus(UpstreamError):
    """The upstream answered with an error status; its status and body reach the client as sent."""

    reason = "status"

    def __init__(
        self, status: int, body: bytes, content_type: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=f"upstream_status_{status}")
        self.status = status
        self.body = body
        self.content_type = content_type
        self.retry_after = retry_after
        if retry_after is not None:
            self.headers = {"retry-after": str(max(1, round(retry_after)))}

    @property
    def retryable(self) -> bool:
        """Worth another attempt: rate limited or a server-side failure (529: Anthropic is overloaded)."""
        return self.status == 429 or self.status in (500, 502, 503, 504, 529)


class StepFailed(PrefitError):
    """A step of a chain failed: the client sees its cause's status, type and code, and the step's name."""

    def __init__(self, step: str, cause: PrefitError) -> None:
        super().__init__(f"step '{step}' failed: {cause.message}", code=cause.code, headers=cause.headers)
        self.step = step
        self.cause = cause
        self.status = cause.status
        self.type = cause.type
        #: The steps that finished before the failure, shown when the caller asked to see steps.
        self.steps: dict[str, Any] | None = None

    def to_body(self) -> dict[str, Any]:
        body = super().to_body()
        if self.steps is not None:
            body["prefit_steps"] = self.steps
        return body


class ConfigIssue:
    """One problem in one file: ``path:line:column: field.path: message``."""

    __slots__ = ("column", "field", "file", "line", "message")

    def __init__(
        self, file: str, message: str, *, line: int | None = None, column: int | None = None, field: str = ""
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        self.message = message

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"

    def __repr__(self) -> str:
        return f"ConfigIssue({str(self)!r})"


class ConfigError(Exception):
    """Every problem found while loading configuration, collected rather than stopping at the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


def unknown_key(key: str, allowed: Iterable[str]) -> str:
    """``unknown key``, with the allowed key it most resembles when one is close (a typo)."""
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f"unknown key (did you mean {close[0]}?)" if close else "unknown key"
