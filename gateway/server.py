"""Build the ASGI app: routes, the plain-ASGI layers around them, and the lifespan that owns clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from gateway.config.load import Config
from gateway.console import Console
from gateway.metrics import Metrics
from gateway.retrieval.resources import ResourceHub
from gateway.serving import endpoints, feedback, health, models, passthrough, responses
from gateway.serving.access_log import AccessLog
from gateway.serving.auth import AuthMiddleware
from gateway.serving.exchange import ExchangeMiddleware
from gateway.serving.experiments import ExperimentRefresher
from gateway.serving.hangup import HangupWatch
from gateway.serving.reload import Reloader
from gateway.serving.runtime import Runtime
from gateway.serving.taps import Taps

__all__ = ["create_app"]

log = logging.getLogger(__name__)
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def create_app(
    config: Config,
    resources: ResourceHub,
    metrics: Metrics | None = None,
    settings_file: Path | None = None,
) -> Starlette:
    """The gateway for one loaded ``Config``; clients open in the lifespan, inside the serving loop.

    ``resources`` is the hub ``config``'s layers were built against (see ``load_config``); the app
    owns it from now on and closes it at shutdown. ``settings_file`` is what hot reload re-reads
    (None: the built-in defaults).
    """
    metrics = metrics or Metrics()
    runtime = Runtime(config, metrics, resources)
    access_log = AccessLog() if config.settings.access_log else None
    reloader = Reloader(runtime, settings_file)
    tracing_middleware = _tracing(runtime)
    experiments = ExperimentRefresher(runtime)
    taps = Taps(metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        await reloader.start(watch=config.settings.reload)
        experiments.start()
        log.info("gateway ready", extra={"fields": {"policies": sorted(runtime.config.policies)}})
        try:
            yield
        finally:
            await reloader.stop()
            await experiments.stop()
            await taps.close()
            await runtime.close()
            if access_log is not None:
                access_log.flush()
            if runtime.tracing is not None:
                await asyncio.to_thread(runtime.tracing.shutdown)

    routes = [
        Route("/v1/chat/completions", endpoints.chat_completions, methods=["POST"]),
        Route("/v1/completions", endpoints.completions, methods=["POST"]),
        Route("/v1/embeddings", endpoints.embeddings, methods=["POST"]),
        Route("/v1/models", models.list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", models.retrieve_model, methods=["GET"]),
        Route("/v1/render", endpoints.render, methods=["POST"]),
        Route("/v1/responses", responses.responses, methods=["POST"]),
        Route("/v1/feedback", feedback.feedback, methods=["POST"]),
        Route("/v1/{path:path}", passthrough.passthrough, methods=_ALL_METHODS),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics_endpoint, methods=["GET"]),
        *Console(runtime).routes,
    ]
    middleware = [
        Middleware(ExchangeMiddleware, metrics=metrics, access_log=access_log),
        *tracing_middleware,
        Middleware(HangupWatch),
        Middleware(AuthMiddleware, keyrings=runtime.keyrings),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.runtime = runtime
    app.state.reloader = reloader
    app.state.feedback_names = feedback.MetricNames()
    app.state.taps = taps
    return app


def _tracing(runtime: Runtime) -> list[Middleware]:
    """With ``tracing`` in settings, the tracer and its request spans; otherwise nothing at all."""
    settings = runtime.config.settings.tracing
    if settings is None:
        return []
    from gateway.serving.tracing import Tracing, TracingMiddleware

    runtime.tracing = Tracing(settings, runtime.metrics)
    return [Middleware(TracingMiddleware, tracing=runtime.tracing)]
