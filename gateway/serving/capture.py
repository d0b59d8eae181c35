"""Sampled production traffic as candidate eval items, and the bounded writer that stores them.

A policy with ``capture`` writes a sample of its chat requests to a JSONL file in the eval
dataset format (``gateway.eval.runner.load_dataset`` reads it): the client's messages as
``input``, the answer as ``expected``, marked ``reviewed: false`` in ``metadata`` until a person
checks it. Prompt text never reaches Prefit's logs; ``capture`` is the policy's explicit opt-in to
store it, in its own file. Nothing from headers is kept (so no keys), and each line passes
through the upstream's credential scrubber.

Lines are queued and written by a worker thread, never on the event loop; when the queue is
full a line is dropped and counted, so a slow disk cannot slow requests or grow memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson

from gateway.engine.record import Exchange
from gateway.wire import ChatRequest
from middleware.base import close_stream

__all__ = ["JsonlWriter", "answer_text", "capture_item", "chat_input", "dump_line", "tee_text"]

log = logging.getLogger(__name__)
_QUEUE_LINES = 1000


class JsonlWriter:
    """Appends lines to files from one background task that writes through a thread."""

    def __init__(self, max_queued: int = _QUEUE_LINES) -> None:
        self._queue: asyncio.Queue[tuple[Path, bytes]] | None = None
        self._max_queued = max_queued
        self._task: asyncio.Task[None] | None = None

    def put(self, path: Path, line: bytes) -> bool:
        """Queue one line; False when the queue is full and the line was dropped."""
        if self._queue is None:
            self._queue = asyncio.Queue(self._max_queued)
            self._task = asyncio.get_running_loop().create_task(self._drain(self._queue))
        try:
            self._queue.put_nowait((path, line))
        except asyncio.QueueFull:
            return False
        return True

    async def _drain(self, queue: asyncio.Queue[tuple[Path, bytes]]) -> None:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await asyncio.to_thread(_append, batch)
            except OSError as exc:
                log.warning("could not store %d captured lines: %s", len(batch), exc)
            for _ in batch:
                queue.task_done()

    async def flush(self) -> None:
        """Wait until every queued line is written (tests, shutdown)."""
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _append(batch: list[tuple[Path, bytes]]) -> None:
    by_file: dict[Path, list[bytes]] = {}
    for path, line in batch:
        by_file.setdefault(path, []).append(line)
    for path, lines in by_file.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as out:
            out.write(b"".join(line + b"\n" for line in lines))


def answer_text(result: dict[str, Any]) -> str | None:
    """The text of a whole chat answer (its first choice), or None when it has none."""
    choices = result.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


async def tee_text(chunks: AsyncIterator[dict[str, Any]], done: Callable[[str], None]) -> AsyncIterator[dict[str, Any]]:
    """Pass a stream through unchanged; once it ends in full, hand its first choice's text to ``done``."""
    parts: list[str] = []
    try:
        async for chunk in chunks:
            choices = chunk.get("choices")
            if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                delta = choices[0].get("delta")
                text = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(text, str) and choices[0].get("index", 0) == 0:
                    parts.append(text)
            yield chunk
    finally:
        await close_stream(chunks)
    done("".join(parts))


def capture_item(exchange: Exchange, messages: list[dict[str, Any]], output: str) -> dict[str, Any]:
    """One eval item: the client's messages in, the production answer as the unreviewed expectation."""
    return {
        "id": exchange.request_id,
        "input": messages,
        "expected": output,
        "metadata": {
            "source": "capture",
            "reviewed": False,
            "policy": exchange.policy,
            "variant": exchange.variant,
            "prompt_version": exchange.prompt_version,
            "captured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }


def chat_input(chat: ChatRequest) -> list[dict[str, Any]]:
    """The client's messages as sent; taken before the policy's layers edit them, so an eval replays them."""
    return [message.model_dump(exclude_none=True) for message in chat.messages]


def dump_line(record: dict[str, Any], scrub: Callable[[str], str]) -> bytes:
    """One JSONL line with the upstream's credentials scrubbed out."""
    return scrub(orjson.dumps(record).decode()).encode()
