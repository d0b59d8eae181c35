"""Gateway keys: plain and hashed forms, and what an empty key ring means."""

from __future__ import annotations

import hashlib

from pydantic import SecretStr

from gateway.serving.auth import KeyRing, bearer_token, is_local
from gateway.settings import is_loopback_host


def test_plain_and_hashed_keys() -> None:
    hashed = "sha256:" + hashlib.sha256(b"second").hexdigest()
    ring = KeyRing([SecretStr("first"), SecretStr(hashed)])
    assert ring
    assert ring.allows("first")
    assert ring.allows("second")
    assert not ring.allows("third")
    assert not ring.allows(None)
    assert not ring.allows(hashed)


def test_empty_ring_is_falsy() -> None:
    assert not KeyRing([])


def test_bearer_token_forms() -> None:
    def scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
        return {"headers": list(headers)}

    assert bearer_token(scope((b"authorization", b"Bearer k1"))) == "k1"
    assert bearer_token(scope((b"authorization", b"bearer  k2 "))) == "k2"
    assert bearer_token(scope((b"authorization", b"Basic abc"))) is None
    assert bearer_token(scope((b"api-key", b"k3"))) == "k3"
    assert bearer_token(scope()) is None


def test_is_local_means_loopback_with_no_proxy_in_between() -> None:
    def scope(host: str | None, *headers: tuple[bytes, bytes]) -> dict[str, object]:
        return {"headers": list(headers), "client": (host, 5000) if host else None}

    assert is_local(scope("127.0.0.1"))
    assert is_local(scope("::1"))
    assert not is_local(scope("10.1.2.3"))
    assert not is_local(scope(None))
    # A proxy on this host makes every request arrive from loopback: its headers say it is not local.
    assert not is_local(scope("127.0.0.1", (b"x-forwarded-for", b"203.0.113.9")))
    assert not is_local(scope("127.0.0.1", (b"forwarded", b"for=203.0.113.9")))
    assert not is_local(scope("127.0.0.1", (b"x-real-ip", b"203.0.113.9")))


def test_is_loopback_host_names_this_machine_only() -> None:
    assert is_loopback_host("localhost")
    assert is_loopback_host("127.0.0.5")
    assert is_loopback_host("[::1]")
    assert not is_loopback_host("0.0.0.0")
    assert not is_loopback_host("example.com")
