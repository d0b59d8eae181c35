"""A small fake OpenAI server on a real socket that records what it received.

Behaviour is chosen by the requested model name so one server serves every test:

- anything else: a chat completion echoing the last user message, with usage
- ``fake-500`` / ``fake-400`` / ``fake-429``: that status with an OpenAI error body
- ``fake-leak``: a 401 whose body repeats the Authorization header it got (a careless provider)
- ``fake-slow``: answers only after ``slow_seconds`` (for deadline tests)
- ``fake-break``: streams two chunks, then drops the connection
- ``fake-hold``: streams one chunk, then waits for ``release`` (disconnect tests set ``cancelled``)
- ``fake-wait`` (any endpoint; on a forwarded path in the body or as ``?model=``): no answer at all
  until the client leaves (at most ``wait_seconds``); ``waiting`` counts such calls open now,
  ``held`` those begun and ``abandoned`` those the client closed since ``reset()``, and
  ``wait_until`` waits for a condition on them
- ``fake-leak-split`` (on a forwarded path): a 401 whose body repeats the Authorization header it
  got, sent in two parts split inside the key, the second after ``release``
- ``fake-stream-error``: streams one chunk, then an SSE error event
- ``fake-json-flaky``: an answer that is not JSON, then (once re-asked) ``{"category": "billing", "priority": 2}``
- ``fake-json-bad``: never JSON; ``fake-json-good``: always ``{"category": "billing", "priority": 2}``
- ``fake-reason``: reasoning text, then ``Answer: 42``
- ``fake-label``: the last assistant message of the request (a few-shot example), else ``unknown``
- ``fake-tool``: a call of the first offered tool with ``{"city": "Paris"}`` (whole or streamed), or,
  once the last message is a tool result, ``tool said: <result>``; ``/v1/responses`` in
  ``tests/fakes/responses.py``
- ``fake-judge``: a grader for eval judge tests: ``5`` when the ``Output:`` of the last user message
  equals its ``Expected:``, else ``2``; ``fake-judge-words``: always ``Looks fine to me.``
- ``fake-shown``: learns only from what it is shown: the answer of a few-shot example whose input
  starts with the same word as the last user message, else ``unknown`` (an empty answer for an
  input starting with ``mute``); a 500 when an example shown starts with ``crash``
- ``fake-no-usage``: the echo, but as llama.cpp's server answers: no ``usage`` in a whole answer,
  and ``stream_options.include_usage`` ignored in a stream
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes import responses as fake_responses

MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeUpstream:
    """Run with ``start()``; inspect ``requests``; ``reset()`` between tests."""

    slow_seconds: float = 5.0
    requests: list[Recorded] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    hold_started: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    fail_models_list: bool = False
    wait_seconds: float = 30.0
    waits: threading.Condition = field(default_factory=threading.Condition)
    waiting: int = 0
    held: int = 0
    abandoned: int = 0

    def __post_init__(self) -> None:
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        self.requests.clear()
        self.cancelled.clear()
        self.hold_started.clear()
        self.fail_models_list = False
        with self.waits:
            self.held = self.abandoned = 0

    def release(self) -> None:
        """Let a ``fake-hold`` stream continue."""
        assert self._loop is not None and self._release is not None
        self._loop.call_soon_threadsafe(self._release.set)

    def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Block until ``condition()`` on the ``fake-wait`` counts holds; False if ``timeout`` passed first."""
        with self.waits:
            return self.waits.wait_for(condition, timeout)

    def _count_waits(self, waiting: int, abandoned: int = 0) -> None:
        with self.waits:
            self.waiting += waiting
            self.held += max(0, waiting)
            self.abandoned += abandoned
            self.waits.notify_all()

    def last(self, path: str | None = None) -> Recorded:
        for item in reversed(self.requests):
            if path is None or item.path == path:
                return item
        raise AssertionError(f"the fake upstream received no request for {path}")

    # -- server ---------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # so asyncio sets TCP_NODELAY
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app(), log_level="critical", lifespan="on", loop="asyncio")
        self._server = uvicorn.Server(config)
        ready = threading.Event()

        def run() -> None:
            async def serve() -> None:
                self._loop = asyncio.get_running_loop()
                self._release = asyncio.Event()
                ready.set()
                assert self._server is not None
                await self._server.serve(sockets=[sock])

            asyncio.run(serve())

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        ready.wait(10)
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/responses", self.responses, methods=["POST"]),
                Route("/v1/{path:path}", self.echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            ]
        )

    async def _record(self, request: Request) -> Any:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        self.requests.append(
            Recorded(request.method, request.url.path, request.url.query, dict(request.headers.items()), body)
        )
        return body

    # -- endpoints --------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        body = await self._record(request)
        model = body.get("model", "")
        scripted = await self._scripted(model, request, body)
        if scripted is not None:
            return scripted
        text = _last_user_text(body.get("messages", []))
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self._chat_stream(model, text, include_usage), media_type="text/event-stream")
        return _json(_completion(model, f"echo: {text}"))

    async def _wait_for_hangup(self, request: Request) -> Response:
        """``fake-wait``: the body is read, so the next message is the client's ``http.disconnect``."""
        self._count_waits(+1)
        left = False
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.wait_seconds):
                    while (await request.receive())["type"] != "http.disconnect":
                        pass
                    left = True
        finally:
            self._count_waits(-1, abandoned=int(left))
        return _json(_completion("fake-wait", "answered after all"))

    async def _split_leak(self, request: Request):  # type: ignore[no-untyped-def]
        text = orjson.dumps(_error(f"bad key: {request.headers.get('authorization')}", "invalid_request_error"))
        key_at = text.index(b"Bearer ") + len(b"Bearer ")
        cut = key_at + (len(text) - key_at) // 4
        try:
            yield text[:cut]
            assert self._release is not None
            await self._release.wait()
            yield text[cut:]
        finally:
            if self._release is not None:
                self._release.clear()

    async def _scripted(self, model: str, request: Request, body: dict[str, Any]) -> Response | None:
        if model in ("fake-500", "fake-400", "fake-429"):
            status = int(model[5:])
            return _json(
                _error(f"scripted {status}", "server_error" if status >= 500 else "invalid_request_error"), status
            )
        if model == "fake-leak":
            return _json(_error(f"bad key: {request.headers.get('authorization')}", "invalid_request_error"), 401)
        if model == "fake-wait":
            return await self._wait_for_hangup(request)
        if model == "fake-slow":
            await asyncio.sleep(self.slow_seconds)
            return _json(_completion(model, "too late"))
        if model == "fake-break":
            return StreamingResponse(self._broken_stream(model), media_type="text/event-stream")
        if model == "fake-hold":
            return StreamingResponse(self._held_stream(model), media_type="text/event-stream")
        if model == "fake-stream-error":
            return StreamingResponse(self._error_stream(model), media_type="text/event-stream")
        if model == "fake-no-usage":
            text = _last_user_text(body.get("messages", []))
            if body.get("stream"):
                return StreamingResponse(self._chat_stream(model, text, False), media_type="text/event-stream")
            return _json({k: v for k, v in _completion(model, f"echo: {text}").items() if k != "usage"})
        if model == "fake-tool":
            return self._tool_call(body)
        if model == "fake-label":
            return _json(_completion(model, _copied_label(body.get("messages", []))))
        if model in ("fake-judge", "fake-judge-words"):
            return _json(_completion(model, _grade(model, _last_user_text(body.get("messages", [])))))
        if model == "fake-shown":
            if _shows_crash(body.get("messages", [])):
                return _json(_error("scripted crash", "server_error"), 500)
            return _json(_completion(model, _shown_label(body.get("messages", []))))
        if model in ("fake-json-flaky", "fake-json-bad", "fake-json-good", "fake-reason"):
            return _json(_completion(model, _scripted_text(model, body)))
        return None

    def _tool_call(self, body: dict[str, Any]) -> Response:
        """``fake-tool``: call the first offered tool, or, after a tool result, say what it returned."""
        messages = body.get("messages", [])
        if (messages and messages[-1].get("role") == "tool") or not body.get("tools"):
            return _json(_completion("fake-tool", f"tool said: {messages[-1].get('content') if messages else ''}"))
        name = body["tools"][0]["function"]["name"]
        call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": '{"city": "Paris"}'}}
        reply = _completion("fake-tool", "")
        reply["choices"][0].update(message={"role": "assistant", "content": None, "tool_calls": [call]})
        reply["choices"][0]["finish_reason"] = "tool_calls"
        if not body.get("stream"):
            return _json(reply)

        async def stream():  # type: ignore[no-untyped-def]
            first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}}
            yield _event(_chunk("fake-tool", {"role": "assistant", "content": None, "tool_calls": [first]}, False))
            for part in ('{"city": ', '"Paris"}'):
                yield _event(
                    _chunk("fake-tool", {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}, False)
                )
            yield _event(_chunk("fake-tool", {}, False, finish="tool_calls"))
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def _chat_stream(self, model: str, text: str, include_usage: bool):  # type: ignore[no-untyped-def]
        words = f"echo: {text}".split(" ")
        yield _event(_chunk(model, {"role": "assistant", "content": ""}, include_usage))
        for index, word in enumerate(words):
            yield _event(_chunk(model, {"content": word if index == 0 else f" {word}"}, include_usage))
        yield _event(_chunk(model, {}, include_usage, finish="stop"))
        if include_usage:
            yield _event({**_chunk(model, {}, False), "choices": [], "usage": _usage(text)})
        yield b"data: [DONE]\n\n"

    async def _broken_stream(self, model: str):  # type: ignore[no-untyped-def]
        yield _event(_chunk(model, {"role": "assistant", "content": "part"}, False))
        yield _event(_chunk(model, {"content": " two"}, False))
        raise ConnectionResetError("fake upstream drops the connection")

    async def _held_stream(self, model: str):  # type: ignore[no-untyped-def]
        try:
            yield _event(_chunk(model, {"role": "assistant", "content": "first"}, False))
            self.hold_started.set()
            assert self._release is not None
            await self._release.wait()
            yield _event(_chunk(model, {"content": " after release"}, False))
            yield b"data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.set()
            raise
        finally:
            if self._release is not None:
                self._release.clear()

    async def _error_stream(self, model: str):  # type: ignore[no-untyped-def]
        yield _event(_chunk(model, {"role": "assistant", "content": "partial"}, False))
        yield _event(_error("the model crashed", "server_error"))

    async def completions(self, request: Request) -> Response:
        body = await self._record(request)
        model = body.get("model", "")
        if model == "fake-wait":
            return await self._wait_for_hangup(request)
        prompt = body.get("prompt", "")
        if body.get("stream"):

            async def stream():  # type: ignore[no-untyped-def]
                for word in ("done", " streaming"):
                    yield _event(
                        {
                            "id": "cmpl-1",
                            "object": "text_completion",
                            "created": 1,
                            "model": model,
                            "choices": [{"index": 0, "text": word, "finish_reason": None, "logprobs": None}],
                        }
                    )
                yield b"data: [DONE]\n\n"

            return StreamingResponse(stream(), media_type="text/event-stream")
        return _json(
            {
                "id": "cmpl-1",
                "object": "text_completion",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "text": f"completed: {prompt}", "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        )

    async def embeddings(self, request: Request) -> Response:
        body = await self._record(request)
        if body.get("model") == "fake-wait":
            return await self._wait_for_hangup(request)
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        return _json(
            {
                "object": "list",
                "model": body.get("model"),
                "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(items))],
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            }
        )

    async def models(self, request: Request) -> Response:
        await self._record(request)
        if self.fail_models_list:
            return _json(_error("models unavailable", "server_error"), 503)
        return _json(
            {
                "object": "list",
                "data": [{"id": name, "object": "model", "created": 1700000000, "owned_by": "fake"} for name in MODELS],
            }
        )

    async def responses(self, request: Request) -> Response:
        body = await self._record(request)
        if body.get("model") in ("fake-500", "fake-400", "fake-429"):
            return await self._scripted(body["model"], request, body)  # type: ignore[return-value]
        if body.get("stream"):
            return StreamingResponse(fake_responses.stream_of(body), media_type="text/event-stream")
        return _json(fake_responses.response_of(body))

    async def echo(self, request: Request) -> Response:
        body = await self._record(request)
        model = body.get("model") if isinstance(body, dict) else request.query_params.get("model")
        if model == "fake-wait":
            return await self._wait_for_hangup(request)
        if model == "fake-leak-split":
            return StreamingResponse(self._split_leak(request), status_code=401, media_type="application/json")
        return _json(
            {"method": request.method, "path": request.url.path, "query": request.url.query, "body": body},
            headers={"x-upstream-header": "kept", "set-cookie": "session=upstream"},
        )


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _event(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _usage(text: str) -> dict[str, int]:
    prompt = max(1, len(text.split()))
    return {"prompt_tokens": prompt, "completion_tokens": prompt + 1, "total_tokens": 2 * prompt + 1}


def _copied_label(messages: list[dict[str, Any]]) -> str:
    """A stand-in for in-context learning: answer with the last example answer shown, else 'unknown'."""
    for message in reversed(messages):
        if message.get("role") == "assistant" and isinstance(message.get("content"), str):
            return str(message["content"])
    return "unknown"


def _grade(model: str, text: str) -> str:
    if model == "fake-judge-words":
        return "Looks fine to me."
    expected, _, output = text.partition("Expected:\n")[2].partition("\n\nOutput:\n")
    return "5" if expected.strip() == output.strip() else "2"


def _shows_crash(messages: list[dict[str, Any]]) -> bool:
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    return any(text.startswith("crash") for text in users[:-1])


def _shown_label(messages: list[dict[str, Any]]) -> str:
    """In-context learning that needs the right example: an answer shown for an input of the same kind."""
    texts = [(m.get("role"), str(m.get("content") or "")) for m in messages]
    users = [index for index, (role, _) in enumerate(texts) if role == "user"]
    if not users:
        return "unknown"
    kind = (texts[users[-1]][1].split() or [""])[0].casefold()
    if kind == "mute":
        return ""
    for index in users[:-1]:
        if texts[index + 1][0] == "assistant" and texts[index][1].casefold().split()[:1] == [kind]:
            return texts[index + 1][1]
    return "unknown"


def _scripted_text(model: str, body: dict[str, Any]) -> str:
    reasked = "does not match the required JSON Schema" in _last_user_text(body.get("messages", []))
    if model == "fake-json-good" or (model == "fake-json-flaky" and reasked):
        return '{"category": "billing", "priority": 2}'
    if model == "fake-reason":
        return "The user asks for six times seven. Six sevens are forty-two.\nAnswer: 42"
    return "Sure! It is a billing question, fairly urgent."


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return str(message["content"])
    return ""


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": _usage(text),
    }


def _chunk(model: str, delta: dict[str, Any], include_usage: bool, finish: str | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    if include_usage:
        chunk["usage"] = None
    return chunk
