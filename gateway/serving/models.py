"""``GET /v1/models``: every policy, then the default upstream's own models; ``GET /v1/models/{id}``: one."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.config.load import LoadedPolicy
from gateway.serving.exchange import exchange_of
from gateway.serving.http import JSON, endpoint, read_body, runtime_of
from gateway.serving.passthrough import forward

__all__ = ["list_models", "retrieve_model"]


def _model_entry(policy: LoadedPolicy, created: int) -> dict[str, Any]:
    primary = policy.primary
    return {
        "id": policy.name,
        "object": "model",
        "created": created,
        "owned_by": "prefit",
        "prefit": {
            "description": policy.spec.description,
            "upstream": primary.upstream,
            "upstream_model": primary.upstream_model,
            "prompt_version": primary.prompt_version,
            "prompt_hash": primary.prompt_hash or None,
            "variants": [
                {
                    "name": v.name,
                    "weight": v.weight,
                    "upstream_model": v.upstream_model,
                    "prompt_version": v.prompt_version,
                    "prompt_hash": v.prompt_hash or None,
                }
                for v in policy.variants
            ],
        },
    }


@endpoint
async def list_models(request: Request) -> Response:
    """``GET /v1/models``: every policy, then the default upstream's models (cached; its failure is not ours).

    Counted with ``policy="models"`` (and every other label "none"), not as an unresolved request.
    """
    exchange_of(request.scope).policy = "models"
    snapshot = runtime_of(request).current
    config = snapshot.config
    created = int(config.loaded_at)
    data = [_model_entry(policy, created) for policy in config.policies.values()]
    data.extend(model for model in await snapshot.catalog.models() if model["id"] not in config.policies)
    return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)


@endpoint
async def retrieve_model(request: Request) -> Response:
    """``GET /v1/models/{id}``: a policy's entry as ``/v1/models`` lists it; any other id is asked of the
    default upstream (forwarded as it came)."""
    snapshot = runtime_of(request).current
    config = snapshot.config
    policy = config.policies.get(request.path_params["model"])
    if policy is None:
        return await forward(request, await read_body(request, config.settings.max_body_bytes))
    exchange_of(request.scope).policy = "models"
    return Response(orjson.dumps(_model_entry(policy, int(config.loaded_at))), media_type=JSON)
