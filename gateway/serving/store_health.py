"""Which policies cannot search the vector store: a log line, a count and a ``/readyz`` entry.

A retrieval (or dynamic few-shot search) that cannot run leaves an answer without the context its
policy asked for, and the client sees a normal 200. That must never pass unnoticed, so layers
report every search to ``call.observer`` and this module turns each failure into a WARNING line
(policy, collection, reason; never the request's text) and ``prefit_retrieval_errors_total``, and
remembers, per policy and collection, the last failure until a later search of that collection
works. Every collection the policies search is also checked when the gateway starts and after each
reload, so a locked store or a missing collection shows in ``/readyz`` before the first request
finds it. A store that keeps failing logs once per ``_LOG_EVERY_S`` with the count in between, so
an outage under load does not flood the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from gateway.config.load import LoadedPolicy
from gateway.metrics import Metrics
from gateway.retrieval.resources import ResourceHub
from middleware.base import ResourceError, StoreUse
from middleware.few_shot import FewShotLayer
from middleware.retrieval import RetrievalLayer

__all__ = ["StoreHealth"]

log = logging.getLogger(__name__)
_LOG_EVERY_S = 60.0
_PROBE_TIMEOUT_S = 15.0


@dataclass(slots=True)
class _Failure:
    layer: str
    reason: str
    at: float
    logged_at: float
    unlogged: int = 0


def _searched(policy: LoadedPolicy) -> Iterator[tuple[str, str]]:
    """(layer, collection) for every vector-store search the policy's variants (and inline chain
    steps) make."""
    for variant in policy.variants:
        pipelines = [variant.pipeline]
        if variant.chain is not None:
            pipelines += [step.pipeline for step in variant.chain.steps if step.pipeline is not None]
        for pipeline in pipelines:
            for layer in pipeline.layers:
                if isinstance(layer, RetrievalLayer):
                    yield "retrieval", layer.spec.collection
                elif isinstance(layer, FewShotLayer) and layer.dynamic is not None:
                    yield "few_shot", layer.dynamic.collection


class StoreHealth:
    """Lives as long as the process (reloads keep it), like the store it watches."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._failing: dict[tuple[str, str], _Failure] = {}

    def observe_one(self, policy: str, use: StoreUse) -> None:
        """One search, as a layer reports it."""
        self.observe(policy, (use,))

    def observe(self, policy: str, uses: Iterable[StoreUse]) -> None:
        """What one request's searches did: count and log failures, forget failures that healed."""
        for use in uses:
            if use.reason is None:
                self._healed(policy, use.collection)
            else:
                self._metrics.retrieval_errors.child(policy, use.reason).inc()
                self._failed(policy, use, "a vector-store search could not run; the answer lacks its context")

    async def check(self, policies: Mapping[str, LoadedPolicy], resources: ResourceHub) -> None:
        """Probe every collection the policies search (the store opens, the collection exists) and
        forget policies that are gone. Opens the store only if some policy searches it."""
        self._failing = {key: failure for key, failure in self._failing.items() if key[0] in policies}
        searches = sorted(
            {(name, layer, collection) for name, policy in policies.items() for layer, collection in _searched(policy)}
        )
        found: dict[str, ResourceError | None] = {}
        for collection in sorted({collection for _, _, collection in searches}):
            found[collection] = await _probe(resources, collection)
        for policy, layer, collection in searches:
            error = found[collection]
            if error is None:
                self._healed(policy, collection)
            else:
                use = StoreUse.failed(layer, collection, error)
                self._failed(policy, use, "a policy's vector store is unusable", throttle=False)

    def report(self) -> dict[str, list[dict[str, object]]]:
        """Current failures by policy, for ``/readyz``: collection, layer, reason and when."""
        listed: dict[str, list[dict[str, object]]] = {}
        for (policy, collection), failure in sorted(self._failing.items()):
            entry = {"collection": collection, "layer": failure.layer, "error": failure.reason, "at": failure.at}
            listed.setdefault(policy, []).append(entry)
        return listed

    def _healed(self, policy: str, collection: str) -> None:
        if self._failing.pop((policy, collection), None) is not None:
            log.info("vector-store searches work again", extra={"fields": {"policy": policy, "collection": collection}})

    def _failed(self, policy: str, use: StoreUse, message: str, *, throttle: bool = True) -> None:
        """Remember and log a failure; requests' failures log once per ``_LOG_EVERY_S`` per policy,
        collection and reason. A check (start-up, reload) always logs, and never holds back the
        first request's line."""
        assert use.reason is not None
        now = time.time()
        key = (policy, use.collection)
        previous = self._failing.get(key)
        if (
            throttle
            and previous is not None
            and previous.reason == use.reason
            and now < previous.logged_at + _LOG_EVERY_S
        ):
            previous.at = now
            previous.unlogged += 1
            return
        fields: dict[str, object] = {
            "policy": policy,
            "collection": use.collection,
            "layer": use.layer,
            "reason": use.reason,
            "error": use.message,
        }
        if previous is not None and previous.unlogged:
            fields["since_last_line"] = previous.unlogged
        log.warning(message, extra={"fields": fields})
        self._failing[key] = _Failure(use.layer, use.reason, now, now if throttle else -_LOG_EVERY_S)


async def _probe(resources: ResourceHub, collection: str) -> ResourceError | None:
    try:
        return await asyncio.wait_for(resources.probe(collection), _PROBE_TIMEOUT_S)
    except TimeoutError:
        return ResourceError(f"the vector store did not answer within {_PROBE_TIMEOUT_S:g} s", "timeout")
