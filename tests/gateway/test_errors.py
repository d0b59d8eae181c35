"""The error hierarchy: every HTTP status a client can see is a class, not an edited instance."""

from __future__ import annotations

import pytest

from gateway.errors import (
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    PrefitError,
    StepFailed,
    UpstreamError,
    UpstreamPayload,
    UpstreamTimeout,
)


@pytest.mark.parametrize(
    ("error", "status", "type_", "code"),
    [
        (MethodNotAllowed("m"), 405, "invalid_request_error", "method_not_allowed"),
        (NotFound("m"), 404, "invalid_request_error", "not_found"),
        (ModelNotFound("m"), 404, "invalid_request_error", "model_not_found"),
        (UpstreamPayload("m"), 502, "upstream_error", "upstream_payload"),
    ],
)
def test_each_status_is_its_own_class(error: PrefitError, status: int, type_: str, code: str) -> None:
    assert (error.status, error.type, error.code) == (status, type_, code)
    assert error.to_body() == {"error": {"message": "m", "type": type_, "param": None, "code": code}}


def test_families_catch_their_members() -> None:
    assert isinstance(MethodNotAllowed("m"), InvalidRequest)
    assert isinstance(ModelNotFound("m"), NotFound)
    assert isinstance(UpstreamPayload("m"), UpstreamError)
    assert UpstreamPayload.reason == "payload"


def test_a_failed_step_keeps_its_cause_and_names_the_step() -> None:
    failed = StepFailed("classify", UpstreamTimeout("upstream 'fake' did not answer in time"))
    assert (failed.status, failed.type, failed.code) == (504, "upstream_error", "upstream_timeout")
    assert failed.message == "step 'classify' failed: upstream 'fake' did not answer in time"
    assert failed.step == "classify"
    assert isinstance(failed.cause, UpstreamTimeout)
