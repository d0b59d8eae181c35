"""What a request becomes before it leaves: the final upstream body, for ``/v1/render`` and ``prefit render``.

Rendering runs the very ``prepare`` steps serving runs, so what is shown is what would be sent.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.config import LoadedPolicy, LoadedVariant
from gateway.wire import ChatRequest, dump_body
from middleware.base import Call

__all__ = ["render_request"]


async def render_request(
    policy: LoadedPolicy | None, variant: LoadedVariant | None, chat: ChatRequest, request_id: str, upstream: str
) -> dict[str, Any]:
    """The upstream body for ``chat`` and what chose it; nothing is sent. Raises ``PrefitError``."""
    call = Call(request_id=request_id, body=chat, stream=bool(chat.stream), upstream=upstream)
    if policy is None or variant is None:
        return {
            "policy": "passthrough",
            "variant": None,
            "prompt_version": None,
            "prompt_hash": None,
            "upstream": upstream,
            "body": orjson.loads(dump_body(chat)),
        }
    call.policy, call.variant, call.prompt_version = policy.name, variant.name, variant.prompt_version
    await variant.pipeline.prepare(call)
    body = variant.pipeline.upstream_body(call)
    return {
        "policy": policy.name,
        "variant": variant.name,
        "prompt_version": variant.prompt_version,
        "prompt_hash": variant.prompt_hash or None,
        "upstream": variant.upstream,
        "body": orjson.loads(dump_body(body)),
    }
