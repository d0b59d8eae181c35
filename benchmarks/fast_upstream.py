"""A very cheap fake OpenAI upstream for benchmarking the gateway's own overhead.

It answers ``POST /v1/chat/completions`` with one fixed ``chat.completion`` (usage included) and
``GET /v1/models`` with a fixed list; anything else gets an OpenAI-shaped 404. Request bodies are
parsed only as far as HTTP framing needs, and every reply is a precomputed byte string.

It is a bare ``asyncio.Protocol`` on uvloop, fed by httptools (the parser uvicorn uses), with no
ASGI or web framework in between: per request it does one parse and one ``transport.write``, so
it stays far from being the bottleneck of a benchmark that puts a whole Python gateway in front.

Run: ``python benchmarks/fast_upstream.py [--host 127.0.0.1] [--port 0] [--cpu 1]``. Once it
accepts connections it prints one JSON line, ``{"event": "listening", "host": ..., "port": ...}``,
on stdout. SIGINT or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import cast

import httptools
import uvloop

__all__ = ["COMPLETION", "MODELS", "UpstreamProtocol", "serve"]

#: The one chat completion every ``POST /v1/chat/completions`` receives.
COMPLETION: dict[str, object] = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 19, "completion_tokens": 9, "total_tokens": 28},
}
#: The answer to ``GET /v1/models``.
MODELS: dict[str, object] = {
    "object": "list",
    "data": [{"id": "gpt-4o-mini", "object": "model", "created": 1700000000, "owned_by": "bench"}],
}
_NOT_FOUND: dict[str, object] = {
    "error": {"message": "Unknown path.", "type": "invalid_request_error", "param": None, "code": "not_found"}
}


def _response(status: str, payload: dict[str, object], *, close: bool = False) -> bytes:
    """A complete HTTP/1.1 response, headers and JSON body, as one byte string."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode("latin-1") + b"\r\n" + body


_ROUTES: dict[tuple[bytes, bytes], bytes] = {
    (b"POST", b"/v1/chat/completions"): _response("200 OK", COMPLETION),
    (b"GET", b"/v1/models"): _response("200 OK", MODELS),
}
_NOT_FOUND_RESPONSE = _response("404 Not Found", _NOT_FOUND)
_BAD_REQUEST_RESPONSE = _response(
    "400 Bad Request", {"error": {"message": "Malformed HTTP request.", "type": "invalid_request_error"}}, close=True
)


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: keep-alive HTTP/1.1, pipelining allowed, bodies read and ignored."""

    __slots__ = ("_parser", "_transport", "_url")

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(_BAD_REQUEST_RESPONSE)
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    # httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        path = self._url.split(b"?", 1)[0]
        transport.write(_ROUTES.get((self._parser.get_method(), path), _NOT_FOUND_RESPONSE))
        if not self._parser.should_keep_alive():
            transport.close()


async def serve(host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, announcing the bound port on stdout once listening."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=2048, reuse_address=True)
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    print(json.dumps({"event": "listening", "host": bound_host, "port": bound_port}), flush=True)
    stopped = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    async with server:
        await stopped.wait()


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default: 0)")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU core")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
