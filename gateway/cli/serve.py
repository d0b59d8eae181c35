"""``prefit serve``: bind, build the app, run uvicorn, stop cleanly on SIGINT and SIGTERM."""

from __future__ import annotations

import contextlib
import gc
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import uvicorn

from gateway.cli.common import config_option, load_or_exit, log, main
from gateway.config.load import find_settings_file
from gateway.logs import configure_logging
from gateway.retrieval.resources import ResourceHub
from gateway.server import create_app
from gateway.settings import is_loopback_host

__all__ = ["serve"]


def _bind(host: str, port: int) -> socket.socket:
    """Bind before serving so that ``--port 0`` can report the port the system chose."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # Nagle plus delayed ACKs add ~40 ms to small responses.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        click.echo(f"error: cannot listen on {host}:{port}: {exc.strerror}", err=True)
        sys.exit(1)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, announcing its real address once it accepts requests.

    SIGINT and SIGTERM ask for uvicorn's graceful shutdown (stop accepting, let requests in flight
    finish, run the lifespan shutdown); a second SIGINT forces it. uvicorn then re-raises the signal
    after draining, which click reports as ``Aborted!`` with exit 1 (and SIGTERM as death by signal,
    143): a stop that was asked for and went cleanly is exit 0 here.
    """

    def __init__(self, config: uvicorn.Config, address: tuple[str, int]) -> None:
        super().__init__(config)
        self.address = address

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        _tune_gc()
        if self.started:
            host, port = self.address
            shown = f"[{host}]" if ":" in host else host
            log.info("prefit listening on http://%s:%d", shown, port, extra={"fields": {"host": host, "port": port}})

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Route SIGINT and SIGTERM to ``handle_exit`` while serving; restore the old handlers after."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@main.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, envvar="PREFIT_HOST", help="Address (PREFIT_HOST).")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    envvar="PREFIT_PORT",
    help="Port, 0 for any free one (PREFIT_PORT).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    envvar="PREFIT_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(config_path: Path | None, host: str, port: int, log_level: str) -> None:
    """Serve the gateway."""
    configure_logging(log_level)
    resources = ResourceHub()
    config = load_or_exit(config_path, resources)
    if not config.settings.keys and not is_loopback_host(host):
        log.warning(
            "no gateway keys are configured and %s is not a loopback address: anyone who can reach "
            "this port can spend your upstream credit; set `keys:` in prefit.yaml",
            host,
        )
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    server_config = uvicorn.Config(
        create_app(config, resources, settings_file=find_settings_file(config_path)),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=30,
    )
    _Server(server_config, (bound_host, bound_port)).run(sockets=[sock])


def _tune_gc() -> None:
    """Freeze what start-up allocated and collect young objects less often.

    Measured: full collections of the long-lived start-up heap paused the loop for ~90 ms every
    few seconds under load; frozen, they no longer scan it, and p99 at concurrency 32 fell ~2x.
    """
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 50_000), gen1, gen2)
