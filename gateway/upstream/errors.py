"""Foreign failures become Prefit's errors here, and only here (as httpx's ``map_httpcore_exceptions``).

``translated`` wraps every socket operation of an upstream implementation: aiohttp exceptions,
timeouts and OS errors leave it as ``gateway.errors.UpstreamError`` subclasses, raised ``from`` the
original, counted in ``prefit_upstream_errors_total`` and scrubbed of credentials. ``status_error``
does the same for an error status the provider answered with.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import time
from collections.abc import Callable, Iterator, Mapping

import aiohttp

from gateway.errors import UpstreamError, UpstreamPayload, UpstreamStatus, UpstreamTimeout, UpstreamUnreachable
from gateway.metrics import Metrics

__all__ = ["FOREIGN_ERRORS", "retry_after", "status_error", "translate", "translated"]

#: What a socket operation may raise that is not already one of Prefit's errors.
FOREIGN_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)

Scrub = Callable[[str], str]


def translate(exc: BaseException, name: str, metrics: Metrics, scrub: Scrub) -> UpstreamError:
    """The ``UpstreamError`` that says what ``exc`` means for upstream ``name``, counted once."""
    if isinstance(exc, TimeoutError):
        error: UpstreamError = UpstreamTimeout(f"upstream {name!r} did not answer in time")
    elif isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.errno == errno.ECONNREFUSED:
        error = UpstreamUnreachable(f"upstream {name!r} is unreachable: connection refused by {exc.host}:{exc.port}")
    elif isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError):
        error = UpstreamUnreachable(f"upstream {name!r} is unreachable: {scrub(str(exc))}")
    elif isinstance(exc, aiohttp.ClientPayloadError):
        error = UpstreamPayload(f"upstream {name!r} broke off its answer")
    else:
        error = UpstreamUnreachable(f"upstream {name!r} failed: {exc.__class__.__name__}")
    metrics.count_upstream_error(name, error.reason)
    return error


@contextlib.contextmanager
def translated(name: str, metrics: Metrics, scrub: Scrub) -> Iterator[None]:
    """Let Prefit's own errors through; turn every foreign failure into an ``UpstreamError``."""
    try:
        yield
    except UpstreamError:
        raise
    except FOREIGN_ERRORS as exc:
        raise translate(exc, name, metrics, scrub) from exc


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the upstream asks us to wait: ``retry-after-ms``, or ``Retry-After`` in seconds or as a date."""
    millis = headers.get("retry-after-ms")
    if millis:
        with contextlib.suppress(ValueError):
            return max(0.0, float(millis) / 1000)
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def status_error(response: aiohttp.ClientResponse, name: str, metrics: Metrics, scrub: Scrub) -> UpstreamStatus:
    """An error status as the client will see it: the provider's status and (scrubbed) body."""
    raw = await response.read()
    text = scrub(raw.decode("utf-8", "replace"))
    content_type = response.headers.get("Content-Type", "application/json")
    metrics.count_upstream_error(name, f"status_{response.status // 100}xx")
    return UpstreamStatus(
        response.status,
        text.encode(),
        content_type,
        f"upstream {name!r} answered {response.status}",
        retry_after=retry_after(response.headers),
    )
