"""Forwarded bodies lose the upstream's secrets however the body is cut into parts."""

from __future__ import annotations

import itertools

import pytest

from gateway.upstream.scrub import BodyScrubber

KEY = b"sk-upstream-SECRET-1f0c9a77"
HEADER = b"org-header-value-123456"
BODY = b'{"error": {"message": "bad key: Bearer ' + KEY + b", org " + HEADER + b'"}}'
CLEAN = BODY.replace(KEY, b"[redacted]").replace(HEADER, b"[redacted]")


def _scrubbed(parts: list[bytes]) -> bytes:
    scrubber = BodyScrubber((KEY, HEADER))
    return b"".join(scrubber.feed(part) for part in parts) + scrubber.flush()


@pytest.mark.parametrize("cut", range(1, len(BODY)))
def test_a_secret_split_across_two_parts_is_redacted(cut: int) -> None:
    assert _scrubbed([BODY[:cut], BODY[cut:]]) == CLEAN


def test_a_secret_split_across_many_parts_is_redacted() -> None:
    assert _scrubbed([BODY[i : i + 1] for i in range(len(BODY))]) == CLEAN
    start = BODY.index(KEY)
    for a, b in itertools.combinations(range(start, start + len(KEY) + 1), 2):
        assert _scrubbed([BODY[:a], BODY[a:b], BODY[b:]]) == CLEAN


def test_only_an_end_that_could_begin_a_secret_is_held_back() -> None:
    scrubber = BodyScrubber((KEY,))
    event = b'data: {"delta": "hi"}\n\n'
    assert scrubber.feed(event) == event
    assert scrubber.feed(b"tasks: sk-ups") == b"tasks: "
    assert scrubber.feed(b"ide down") == b"sk-upside down"
    assert scrubber.feed(b"ends with s") == b"ends with "
    assert scrubber.flush() == b"s"


def test_without_secrets_parts_pass_unchanged() -> None:
    scrubber = BodyScrubber(())
    assert scrubber.feed(b"sk-") == b"sk-"
    assert scrubber.flush() == b""
