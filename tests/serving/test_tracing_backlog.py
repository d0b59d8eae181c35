"""Spans past the export backlog are dropped and counted, never queued without bound or silently."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from gateway.metrics import Metrics
from gateway.serving.tracing import _Backlog, _Counted


class _StalledCollector(SpanExporter):
    """A collector that does not answer until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def test_a_stalled_collector_costs_dropped_and_counted_spans() -> None:
    metrics = Metrics()
    collector = _StalledCollector()
    exporter = _Counted(collector)
    exporter.backlog = _Backlog(BatchSpanProcessor(exporter, max_queue_size=8, max_export_batch_size=8), 3, metrics)
    provider = TracerProvider()
    provider.add_span_processor(exporter.backlog)
    tracer = provider.get_tracer("test")
    for index in range(10):
        tracer.start_span(f"span {index}").end()
    assert metrics.spans_dropped._value.get() == 7
    collector.release.set()
    assert provider.force_flush(10_000)
    tracer.start_span("after the collector answered").end()  # the backlog has room again
    provider.shutdown()
    assert collector.exported == 4
    assert metrics.spans_dropped._value.get() == 7
