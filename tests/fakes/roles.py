"""A fake model on a real socket whose answer depends on its system prompt, for chain tests.

- system starting ``Extract``: ``{"entities": [...]}``, the capitalised words of the user turn
- ``Classify``: ``positive`` / ``negative`` / ``neutral`` by words in the user turn
- ``Summarise``: ``summary: `` and the user turn
- ``Route``: ``complaint`` if the user turn mentions a refund, else ``question``
- ``Hold``: the user turn, once ``hold_for`` calls are in flight (or ``hold_timeout`` passed)
- anything else: ``echo: `` and the user turn

Every request is recorded; ``peak`` is the most calls in flight at once since ``reset()``. With
``hold_for`` set, ``Classify`` and ``Hold`` calls wait until that many are in flight, so a test
can see concurrency reached without timing anything.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

_WORDS = re.compile(r"\b[A-Z][a-z]+\b")


@dataclass
class RoleUpstream:
    hold_for: int = 0
    hold_timeout: float = 5.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._enough: asyncio.Event | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self, hold_for: int = 0) -> None:
        self.requests.clear()
        self.peak = 0
        self.hold_for = hold_for
        self._enough = None

    def received(self, role: str) -> list[str]:
        """The user turns of requests whose system prompt starts with ``role``, in arrival order."""
        return [_user(body) for body in self.requests if _system(body).startswith(role)]

    def start(self) -> RoleUpstream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="critical", loop="asyncio"))
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve(sock)), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("role upstream did not start")
            time.sleep(0.01)
        return self

    async def _serve(self, sock: socket.socket) -> None:
        assert self._server is not None
        await self._server.serve(sockets=[sock])

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    async def chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append(body)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            system, text = _system(body), _user(body)
            if self.hold_for and system.startswith(("Classify", "Hold")):
                await self._hold()
            answer = _answer(system, text)
        finally:
            self.in_flight -= 1
        if body.get("stream"):
            return StreamingResponse(_stream(body["model"], answer), media_type="text/event-stream")
        return Response(orjson.dumps(_completion(body["model"], answer)), media_type="application/json")

    async def _hold(self) -> None:
        if self._enough is None:
            self._enough = asyncio.Event()
        if self.in_flight >= self.hold_for:
            self._enough.set()
        try:
            await asyncio.wait_for(self._enough.wait(), self.hold_timeout)
        except TimeoutError:
            self._enough.set()


def _answer(system: str, text: str) -> str:
    if system.startswith("Extract"):
        return orjson.dumps({"entities": _WORDS.findall(text)}).decode()
    if system.startswith("Classify"):
        lowered = text.lower()
        if any(word in lowered for word in ("love", "great", "good")):
            return "positive"
        if any(word in lowered for word in ("hate", "bad", "awful")):
            return "negative"
        return "neutral"
    if system.startswith("Summarise"):
        return f"summary: {text}"
    if system.startswith("Route"):
        return "complaint" if "refund" in text.lower() else "question"
    if system.startswith("Hold"):
        return text
    return f"echo: {text}"


def _system(body: dict[str, Any]) -> str:
    return next((str(m["content"]) for m in body.get("messages", []) if m.get("role") == "system"), "")


def _user(body: dict[str, Any]) -> str:
    return next((str(m["content"]) for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-role",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


async def _stream(model: str, text: str):  # type: ignore[no-untyped-def]
    for delta in ({"role": "assistant", "content": text}, {}):
        chunk = {
            "id": "chatcmpl-role",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None if delta else "stop"}],
        }
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    yield b"data: [DONE]\n\n"
