"""A raw-socket fake upstream that misbehaves on cue: resets, silence, broken streams.

Starlette cannot reset a connection or stall before its first byte, so this speaks just enough
HTTP/1.1 by hand. Each incoming request takes the next behaviour from ``script`` (``ok`` once the
script runs out) and is counted in ``connections``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import deque

import orjson

_COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-faulty",
        "object": "chat.completion",
        "created": 1,
        "model": "faulty",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "faulty says ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
    }
)


def _chunk(content: str) -> bytes:
    return (
        b"data: "
        + orjson.dumps(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "faulty",
                "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
            }
        )
        + b"\n\n"
    )


class FaultyUpstream:
    BEHAVIOURS = ("ok", "ok-stream", "reset", "silent", "stream-stall", "trickle", "drop-mid-stream", "500", "429")

    def __init__(self) -> None:
        self.script: deque[str] = deque()
        self.connections = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self, *script: str) -> None:
        self.script = deque(script)
        self.connections = 0

    def start(self) -> FaultyUpstream:
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            async with self._server:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._server.serve_forever()

        self._thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True, name="faulty-upstream")
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)

    async def _read_request(self, reader: asyncio.StreamReader) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        return True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._read_request(reader):
                self.connections += 1
                behaviour = self.script.popleft() if self.script else "ok"
                if not await self._respond(behaviour, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _respond(self, behaviour: str, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must end."""
        if behaviour == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if behaviour == "silent":
            await asyncio.sleep(3600)
            return False
        if behaviour == "stream-stall":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(3600)
            return False
        if behaviour in ("500", "429"):
            body = orjson.dumps({"error": {"message": f"faulty {behaviour}", "type": "server_error"}})
            extra = b"Retry-After: 1\r\n" if behaviour == "429" else b""
            writer.write(
                b"HTTP/1.1 "
                + behaviour.encode()
                + b" Oops\r\nContent-Type: application/json\r\n"
                + extra
                + b"Content-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            await writer.drain()
            return True
        if behaviour == "trickle":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(100):
                part = _chunk("drip ")
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.1)
            return False
        if behaviour in ("ok-stream", "drop-mid-stream"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (_chunk("faulty"), _chunk(" streams")):
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                await writer.drain()
                if behaviour == "drop-mid-stream":
                    writer.transport.abort()
                    return False
            done = b"data: [DONE]\n\n"
            writer.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
            await writer.drain()
            return True
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(_COMPLETION)).encode()
            + b"\r\n\r\n"
            + _COMPLETION
        )
        await writer.drain()
        return True
