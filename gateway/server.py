"""Build the ASGI app: routes, the plain-ASGI layers around them, and the lifespan that owns clients."""

from __future__ import annotations

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
from gateway.serving import endpoints, feedback, health, models, passthrough
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


def create_app(config: Config, metrics: Metrics | None = None, settings_file: Path | None = None) -> Starlette:
    """The gateway for one loaded ``Config``; clients open in the lifespan, inside the serving loop.

    ``settings_file`` is what hot reload re-reads (None: the built-in defaults).
    """
    metrics = metrics or Metrics()
    runtime = Runtime(config, metrics)
    access_log = AccessLog() if config.settings.access_log else None
    reloader = Reloader(runtime, settings_file)
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

    routes = [
        Route("/v1/chat/completions", endpoints.chat_completions, methods=["POST"]),
        Route("/v1/completions", endpoints.completions, methods=["POST"]),
        Route("/v1/embeddings", endpoints.embeddings, methods=["POST"]),
        Route("/v1/models", models.list_models, methods=["GET"]),
        Route("/v1/render", endpoints.render, methods=["POST"]),
        Route("/v1/feedback", feedback.feedback, methods=["POST"]),
        Route("/v1/{path:path}", passthrough.passthrough, methods=_ALL_METHODS),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics_endpoint, methods=["GET"]),
        *Console(runtime).routes,
    ]
    middleware = [
        Middleware(ExchangeMiddleware, metrics=metrics, access_log=access_log),
        Middleware(HangupWatch),
        Middleware(AuthMiddleware, keyrings=runtime.keyrings),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.runtime = runtime
    app.state.reloader = reloader
    app.state.feedback_names = feedback.MetricNames()
    app.state.taps = taps
    return app
