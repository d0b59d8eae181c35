"""OpenTelemetry traces: one span per request, layer stage, chain step and upstream call.

Only built when settings have ``tracing``; without it nothing here is imported by the request
path and no span is created. Spans follow the GenAI semantic conventions (``gen_ai.*``) plus
``prefit.policy``, ``prefit.variant`` and ``prefit.prompt_version``; they never carry prompt or
completion text. A client's ``traceparent`` is continued. The SDK's ``BatchSpanProcessor`` exports
from its own thread; in front of it ``_Backlog`` bounds the spans waiting for export at
``max_queue_size``, so a slow or absent collector drops spans (counted in
``prefit_trace_spans_dropped_total``) instead of slowing requests or growing memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.engine.record import Exchange
from gateway.metrics import Metrics
from gateway.settings import TracingSettings
from middleware.base import close_stream

__all__ = ["Tracing", "TracingMiddleware"]

_PROPAGATOR = TraceContextTextMapPropagator()
_NS = 1_000_000_000


class _Backlog(SpanProcessor):
    """Spans handed to the batch processor and not yet exported, at most ``limit``: past it a span is
    dropped and counted. The batch processor would drop too, but silently; this one says so."""

    def __init__(self, inner: SpanProcessor, limit: int, metrics: Metrics | None) -> None:
        self._inner = inner
        self._limit = limit
        self._metrics = metrics
        self._pending = 0
        self._lock = threading.Lock()

    def exported(self, count: int) -> None:
        with self._lock:
            self._pending = max(0, self._pending - count)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            full = self._pending >= self._limit
            if not full:
                self._pending += 1
        if full:
            if self._metrics is not None:
                self._metrics.spans_dropped.inc()
            return
        self._inner.on_end(span)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _Counted(SpanExporter):
    """The OTLP exporter, telling the backlog how many spans left it (exported or failed)."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self.backlog: _Backlog | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            return self._inner.export(spans)
        finally:
            if self.backlog is not None:
                self.backlog.exported(len(spans))

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class Tracing:
    """The tracer of one gateway process and the spans serving opens with it."""

    def __init__(self, settings: TracingSettings, metrics: Metrics | None = None) -> None:
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            sampler=ParentBased(TraceIdRatioBased(settings.sample)),
        )
        exporter = _Counted(OTLPSpanExporter(endpoint=settings.otlp_endpoint, timeout=10))
        # The batch processor's own queue is larger than the backlog's bound, so it never drops silently.
        queue = settings.max_queue_size * 2
        batch = BatchSpanProcessor(exporter, max_queue_size=queue, max_export_batch_size=min(512, queue))
        exporter.backlog = _Backlog(batch, settings.max_queue_size, metrics)
        self.provider.add_span_processor(exporter.backlog)
        self.tracer = self.provider.get_tracer("prefit")

    def shutdown(self) -> None:
        """Export what is queued (bounded by the exporter's timeout) and stop."""
        self.provider.shutdown()

    def stage(self, stage: str, seconds: float) -> None:
        """A layer stage that just ended, as a span of the current step or request."""
        end = time.time_ns()
        span = self.tracer.start_span(f"stage {stage}", start_time=end - int(seconds * _NS))
        span.set_attribute("prefit.stage", stage)
        span.end(end_time=end)

    async def around(
        self, name: str, attributes: Mapping[str, Any], run: Callable[[], Awaitable[Any]], client: bool = False
    ) -> Any:
        """Run ``run`` inside a span; a streamed result keeps the span open until its last chunk."""
        kind = trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL
        span = self.tracer.start_span(name, kind=kind, attributes=dict(attributes))
        try:
            with trace.use_span(span, end_on_exit=False):
                result = await run()
        except BaseException:
            span.end()
            raise
        if isinstance(result, dict):
            _note_usage(span, result)
            span.end()
            return result
        return _spanned(span, result)


@contextmanager
def _ended(span: trace.Span) -> Iterator[None]:
    try:
        yield
    finally:
        span.end()


async def _spanned(span: trace.Span, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    with _ended(span):
        try:
            async for chunk in chunks:
                if chunk.get("usage"):
                    _note_usage(span, chunk)
                yield chunk
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
            raise
        finally:
            await close_stream(chunks)


def _note_usage(span: trace.Span, reply: Mapping[str, Any]) -> None:
    usage = reply.get("usage")
    if isinstance(usage, dict):
        span.set_attribute("gen_ai.usage.input_tokens", int(usage.get("prompt_tokens") or 0))
        span.set_attribute("gen_ai.usage.output_tokens", int(usage.get("completion_tokens") or 0))
    model = reply.get("model")
    if isinstance(model, str):
        span.set_attribute("gen_ai.response.model", model)


def request_attributes(exchange: Exchange) -> dict[str, Any]:
    """What a request span says once the request is done."""
    attributes: dict[str, Any] = {
        "http.response.status_code": exchange.final_status,
        "prefit.request_id": exchange.request_id,
    }
    if exchange.policy != "none":
        attributes.update(
            {
                "prefit.policy": exchange.policy,
                "prefit.variant": exchange.variant,
                "prefit.prompt_version": exchange.prompt_version,
                "gen_ai.request.model": exchange.model,
                "gen_ai.usage.input_tokens": exchange.prompt_tokens,
                "gen_ai.usage.output_tokens": exchange.completion_tokens,
            }
        )
    return attributes


class TracingMiddleware:
    """A server span around each HTTP request, continuing the client's ``traceparent``."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracer = tracing.tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        parent = _PROPAGATOR.extract(carrier)
        name = f"{scope['method']} {scope['path']}"
        attributes = {"http.request.method": scope["method"], "url.path": scope["path"]}
        with self.tracer.start_as_current_span(
            name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
        ) as span:
            try:
                await self.app(scope, receive, send)
            finally:
                exchange = scope.get("state", {}).get("exchange")
                if isinstance(exchange, Exchange):
                    span.set_attributes(request_attributes(exchange))
