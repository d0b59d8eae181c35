"""Gateway keys: plain and hashed forms, and what an empty key ring means."""

from __future__ import annotations

import hashlib

from pydantic import SecretStr

from gateway.serving.auth import KeyRing, bearer_token


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
