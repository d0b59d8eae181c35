"""``/healthz``, ``/readyz`` and ``/metrics``: what operators and orchestrators ask."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.metrics import CONTENT_TYPE_LATEST
from gateway.serving.http import JSON, runtime_of

__all__ = ["healthz", "metrics_endpoint", "readyz"]


async def healthz(request: Request) -> Response:
    """``GET /healthz``: the process is up."""
    return Response(b'{"status":"ok"}', media_type=JSON)


async def readyz(request: Request) -> Response:
    """``GET /readyz``: config loaded and clients started (503 otherwise), and the last reload's outcome.

    ``upstreams`` says of each upstream "ok" or why its calls cannot succeed (no api_key); one the
    default upstream or a policy uses makes the gateway unready, since every call to it would fail.

    An unreachable Redis makes the gateway unready only when rate limits fail closed; failing open,
    the gateway still serves correctly and taking it out of rotation would only hurt.

    Policies whose vector-store searches fail (seen at start-up, on reload or by a request, until a
    search of that collection works again) are listed under ``retrieval`` and the status says
    ``degraded``, but the answer stays 200: the store is shared by every replica (a Qdrant server)
    or it is this replica's only one (embedded), so taking the replica out of rotation would not
    bring the context back and would fail the policies that need no store. Those with
    ``on_error: skip`` (and dynamic few-shot, which falls back to its static examples) still answer,
    with ``x-prefit-context: error``; those with ``on_error: fail`` answer 502 ``retrieval_failed``
    whichever replica they reach.
    """
    runtime = runtime_of(request)
    snapshot = runtime.current
    ready = runtime.started
    status = runtime.reload_status
    body: dict[str, object] = {
        "status": "ready" if ready else "starting",
        "policies": len(snapshot.config.policies),
        "config_loaded_at": snapshot.config.loaded_at,
        "last_reload": {"ok": status.ok, "at": status.at, "errors": status.errors},
    }
    body["upstreams"] = dict(snapshot.config.upstream_status)
    if snapshot.config.unready_upstreams:
        ready = False
        body["status"] = "degraded"
    if snapshot.config.settings.redis_url:
        reachable = await snapshot.state.ping()
        body["redis"] = "ok" if reachable else "unreachable"
        if not reachable and snapshot.config.settings.rate_limits.on_backend_error == "closed":
            ready = False
            body["status"] = "degraded"
    if failing := runtime.store_health.report():
        body["retrieval"] = failing
        if runtime.started:
            body["status"] = "degraded"
    return Response(orjson.dumps(body), status_code=200 if ready else 503, media_type=JSON)


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics`` in Prometheus' text format."""
    return Response(runtime_of(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
