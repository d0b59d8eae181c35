"""Store health: what a failed search leaves in the log, the counter and /readyz, and how it heals."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics
from gateway.retrieval.resources import ResourceHub
from gateway.serving.store_health import StoreHealth
from middleware.base import StoreUse

LOCKED = StoreUse("retrieval", "docs", "store_locked", "the embedded Qdrant storage is already in use")


def _errors(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (sample.labels["policy"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
        if sample.name == "prefit_retrieval_errors_total"
    }


def test_failures_are_counted_every_time_logged_once_a_minute_and_forgotten_once_healed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    health = StoreHealth(metrics)
    with caplog.at_level(logging.INFO, logger="gateway.serving.store_health"):
        for _ in range(3):
            health.observe("kb", [LOCKED])
    assert _errors(metrics) == {("kb", "store_locked"): 3}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "an outage under load does not flood the log"
    assert warnings[0].fields["reason"] == "store_locked"  # type: ignore[attr-defined]
    assert [(e["collection"], e["error"]) for e in health.report()["kb"]] == [("docs", "store_locked")]

    with caplog.at_level(logging.INFO, logger="gateway.serving.store_health"):
        health.observe("kb", [StoreUse("retrieval", "docs")])
    assert health.report() == {}
    assert any("work again" in r.getMessage() for r in caplog.records)


async def test_a_reload_forgets_policies_that_are_gone() -> None:
    health = StoreHealth(Metrics())
    health.observe("removed", [LOCKED])
    await health.check({}, ResourceHub())  # no policy searches a store: nothing is opened
    assert health.report() == {}
