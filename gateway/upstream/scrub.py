"""Credentials out of everything a client or a log can see: text, headers, and bodies in parts.

Every upstream implementation builds one ``Secrets`` from its settings and runs every error
message, forwarded header and forwarded body through it, so a provider that echoes the key it was
sent (some error bodies do) never passes it on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import AnyStr

from gateway.settings import UpstreamSettings

__all__ = ["MIN_SECRET_LENGTH", "BodyScrubber", "Secrets"]

#: Shorter header values (``acme``, ``2024-06-01``) are too common to be secrets worth redacting.
MIN_SECRET_LENGTH = 12
_REDACTED = "[redacted]"
_REDACTED_BYTES = _REDACTED.encode()


def _redact(text: AnyStr, secrets: Iterable[AnyStr], marker: AnyStr) -> AnyStr:
    """``text`` with every occurrence of every secret replaced by ``marker``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, marker)
    return text


def _partial_secret_start(data: bytes, secrets: Iterable[bytes]) -> int:
    """Where the longest end of ``data`` that could be the beginning of a secret starts; ``len(data)``
    when no end could be."""
    cut = len(data)
    for secret in secrets:
        first = secret[:1]
        at = data.find(first, max(0, len(data) - len(secret) + 1))
        while 0 <= at < cut:
            if secret.startswith(data[at:]):
                cut = at
                break
            at = data.find(first, at + 1)
    return cut


class Secrets:
    """One upstream's credentials: its key and every configured header value long enough to be one."""

    __slots__ = ("_bytes", "_text")

    def __init__(self, settings: UpstreamSettings) -> None:
        key = settings.api_key.get_secret_value() if settings.api_key else None
        self._text = tuple(s for s in (key, *settings.headers.values()) if s and len(s) >= MIN_SECRET_LENGTH)
        self._bytes = tuple(s.encode() for s in self._text)

    def scrub(self, text: str) -> str:
        """``text`` with every credential replaced by ``[redacted]``."""
        return _redact(text, self._text, _REDACTED)

    def body_scrubber(self) -> BodyScrubber:
        """A scrubber for one body that arrives in parts."""
        return BodyScrubber(self._bytes)


class BodyScrubber:
    """Redacts secrets from a body that arrives in parts, a secret split across two parts included.

    The end of a part is held back until the next one only when it could begin a secret (at most
    ``len(secret) - 1`` bytes), so a streamed body is not delayed when nothing there looks like one:
    an SSE event's closing blank line still goes out with its part.
    """

    __slots__ = ("_held", "_secrets")

    def __init__(self, secrets: tuple[bytes, ...]) -> None:
        self._secrets = secrets
        self._held = b""

    def feed(self, part: bytes) -> bytes:
        """What of the body so far can go out now, redacted."""
        data = _redact(self._held + part, self._secrets, _REDACTED_BYTES)
        cut = _partial_secret_start(data, self._secrets)
        self._held = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        """The held-back end, once the body is complete: it did not turn out to be a secret."""
        held, self._held = self._held, b""
        return held
