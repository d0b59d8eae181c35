"""Gateway keys: who may call ``/v1/*`` and ``/metrics``.

The one trust question that is not about keys lives here too: ``is_local``, whether a caller is
on this machine, which every loopback-only decision (variant pinning, the console without admin
keys) asks the same way.

Keys are kept only as sha256 digests (a configured plain key is hashed at load) and a presented
key is compared against every digest with ``hmac.compare_digest``, so neither the match position
nor the key's length shows in the timing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable

import orjson
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import Unauthenticated
from gateway.settings import is_loopback_host

__all__ = ["AuthMiddleware", "KeyRing", "bearer_token", "is_local"]

#: Headers by which a reverse proxy says it speaks for someone else.
_FORWARDED = (b"forwarded", b"x-forwarded-for", b"x-real-ip")


def _digest(secret: str) -> bytes:
    if secret.startswith("sha256:"):
        return bytes.fromhex(secret[7:])
    return hashlib.sha256(secret.encode()).digest()


class KeyRing:
    """A set of accepted keys; empty means no authentication."""

    __slots__ = ("_digests",)

    def __init__(self, keys: Iterable[SecretStr]) -> None:
        self._digests = tuple(_digest(key.get_secret_value()) for key in keys)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def allows(self, presented: str | None) -> bool:
        if presented is None:
            return False
        candidate = hashlib.sha256(presented.encode()).digest()
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(candidate, digest)
        return found


def bearer_token(scope: Scope) -> str | None:
    """The key from ``Authorization: Bearer ...`` (or ``api-key``, as Azure-style clients send)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
        if name == b"api-key":
            return value.decode("latin-1").strip() or None
    return None


def is_local(scope: Scope) -> bool:
    """A caller on this machine that no proxy speaks for.

    A proxy on the same host makes every request arrive from loopback, so a request that carries
    forwarding headers is never local, whatever its socket address.
    """
    if any(name in _FORWARDED for name, _ in scope["headers"]):
        return False
    client = scope.get("client")
    return client is not None and is_loopback_host(str(client[0]))


class AuthMiddleware:
    """Refuses ``/v1/*`` without a gateway key and ``/metrics`` without the metrics key, when set.

    An admin key also opens ``/v1/*``: admins pin variants there (``prefit eval --url``).
    """

    def __init__(self, app: ASGIApp, keyrings: Callable[[], tuple[KeyRing, KeyRing, KeyRing]]) -> None:
        self.app = app
        self.keyrings = keyrings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            gateway_keys, metrics_keys, admin_keys = self.keyrings()
            path: str = scope["path"]
            if path.startswith("/v1/") and gateway_keys:
                token = bearer_token(scope)
                if not (gateway_keys.allows(token) or (admin_keys and admin_keys.allows(token))):
                    await _refuse(send, False)
                    return
            elif path == "/metrics" and metrics_keys and not metrics_keys.allows(bearer_token(scope)):
                await _refuse(send, True)
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, metrics: bool) -> None:
    what = "the metrics key" if metrics else "a valid gateway API key"
    error = Unauthenticated(f"Incorrect or missing API key. Send {what} as 'Authorization: Bearer <key>'.")
    body = orjson.dumps(error.to_body())
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="prefit"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
