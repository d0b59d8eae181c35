"""Server-sent events from a provider: split a byte stream into events, and compose event iterators."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from middleware.base import close_stream

__all__ = ["SSE_DONE", "empty", "prepend", "split_events"]

SSE_DONE = b"[DONE]"


def split_events(buffer: bytearray) -> Iterable[bytes]:
    """Pop every complete SSE event (``\\n\\n``-terminated) from ``buffer``, returning their data."""
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return
        event = bytes(buffer[:end])
        del buffer[: end + 2]
        data = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if data:
            yield b"\n".join(data)


async def empty() -> AsyncIterator[dict[str, Any]]:
    """A stream that ended before its first event."""
    return
    yield  # pragma: no cover - makes this an async generator


async def prepend(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """Yield ``first`` then ``rest``, closing ``rest`` however the consumer stops."""
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        await close_stream(rest)
