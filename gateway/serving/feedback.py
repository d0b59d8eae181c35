"""``POST /v1/feedback``: the application says how an answer turned out.

The body names the request (its ``x-prefit-request-id``), a metric and a number or boolean. The
policy and variant that answered come from the feedback store (``gateway.state.feedback``), so
any replica can take feedback for any request. Metric names are short identifiers, and a policy
accepts only the ones it lists in ``feedback_metrics`` (or, without a list, the first
``feedback.max_metrics`` names it sees), so metric labels stay bounded. Feedback on an
experiment's metric also counts towards its arm's posterior.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from gateway.config.load import LoadedPolicy
from gateway.errors import InvalidRequest, NotFound, ServiceUnavailable
from gateway.policy import METRIC_PATTERN
from gateway.serving.http import endpoint, read_body, runtime_of
from gateway.serving.resolve import caller
from gateway.state.base import StateUnavailable

__all__ = ["FeedbackBody", "MetricNames", "counts_as_success", "feedback", "parse_feedback"]

_MAX_BODY = 4096


class FeedbackBody(BaseModel):
    """The body of ``POST /v1/feedback``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: str = Field(min_length=1, max_length=128, description="The answer's x-prefit-request-id.")
    metric: str = Field(pattern=METRIC_PATTERN, description="What is measured, e.g. `thumbs_up`.")
    value: bool | float = Field(description="A boolean outcome or a number.")


class MetricNames:
    """The metric names each policy without a ``feedback_metrics`` list has accepted (bounded)."""

    def __init__(self) -> None:
        self._seen: dict[str, set[str]] = {}

    def admit(self, policy: LoadedPolicy, metric: str, limit: int) -> None:
        """Raises ``InvalidRequest`` for a metric this policy does not take."""
        listed = policy.spec.feedback_metrics
        if listed is not None:
            if metric not in listed:
                raise InvalidRequest(
                    f"The model '{policy.name}' takes feedback on {', '.join(listed) or 'no metric'}, not '{metric}'.",
                    param="metric",
                )
            return
        seen = self._seen.setdefault(policy.name, set())
        if metric not in seen and len(seen) >= limit:
            raise InvalidRequest(
                f"The model '{policy.name}' already takes feedback on {limit} metrics; list the ones it should "
                "take in its `feedback_metrics`.",
                param="metric",
            )
        seen.add(metric)


def parse_feedback(raw: bytes) -> FeedbackBody:
    """Raises ``InvalidRequest`` naming the first bad field."""
    try:
        body = FeedbackBody.model_validate_json(raw or b"null")
    except ValidationError as exc:
        error = exc.errors()[0]
        where = str(error["loc"][0]) if error["loc"] else None
        message = "a number or a boolean" if where == "value" and error["type"] != "missing" else error["msg"]
        raise InvalidRequest(f"Invalid feedback: {where or 'body'}: {message}.", param=where) from None
    if isinstance(body.value, float) and not math.isfinite(body.value):
        raise InvalidRequest("Invalid feedback: value must be a finite number or a boolean.", param="value")
    return body


def counts_as_success(policy: LoadedPolicy, value: bool | float) -> bool:
    experiment = policy.spec.experiment
    assert experiment is not None
    if isinstance(value, bool):
        return value
    if experiment.threshold is None:
        raise InvalidRequest(
            f"The experiment of '{policy.name}' counts true/false feedback on '{experiment.metric}'; "
            "send a boolean (or give the experiment a threshold).",
            param="value",
        )
    return value >= experiment.threshold


@endpoint
async def feedback(request: Request) -> Response:
    """``POST /v1/feedback``: 204 when counted; 404 for a request that is unknown or expired."""
    runtime = runtime_of(request)
    snapshot = runtime.current
    if snapshot.limiter.applies(None):
        await snapshot.limiter.admit(caller(request, snapshot), "none", None)
    body = parse_feedback(await read_body(request, _MAX_BODY))
    try:
        answered = await snapshot.feedback.recall(body.request_id)
    except StateUnavailable:
        raise ServiceUnavailable("Feedback cannot be matched to its request right now; try again shortly.") from None
    if answered is None:
        raise NotFound(
            f"No request '{body.request_id}' is known here (feedback is kept for "
            f"{snapshot.config.settings.feedback.remember_s:g} s after the answer).",
            param="request_id",
        )
    policy = snapshot.config.policies.get(answered.policy)
    if policy is None:
        if answered.policy == "passthrough":
            raise InvalidRequest(
                f"Request '{body.request_id}' went straight to the upstream (no policy), so it takes no feedback.",
                param="request_id",
                code="feedback_passthrough",
            )
        raise NotFound(f"The model '{answered.policy}' that answered this request is gone.", param="request_id")
    request.app.state.feedback_names.admit(policy, body.metric, snapshot.config.settings.feedback.max_metrics)
    experiment = policy.spec.experiment
    if experiment is not None and experiment.metric == body.metric:
        success = counts_as_success(policy, body.value)
        try:
            await snapshot.feedback.count(policy.name, body.metric, answered.variant, success)
        except StateUnavailable:
            raise ServiceUnavailable("Feedback cannot be counted right now; try again shortly.") from None
    metrics = runtime.metrics
    metrics.feedback.child(policy.name, answered.variant, body.metric).inc()
    metrics.feedback_value_sum.child(policy.name, answered.variant, body.metric).inc(float(body.value))
    return Response(status_code=204)
