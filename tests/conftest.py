"""Shared fixtures: the fake upstream on a real socket, and real ``prefit serve`` processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.fakes.upstream import FakeUpstream

UPSTREAM_KEY = "sk-upstream-SECRET-1f0c9a77"


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> FakeUpstream:
    """The session's fake upstream, with its recordings cleared for this test."""
    fake_upstream.reset()
    return fake_upstream


class GatewayProcess:
    """``prefit serve`` in a child process; its log lines are collected as they are written."""

    def __init__(self, workdir: Path, args: list[str]) -> None:
        self.workdir = workdir
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.port = 0
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONASYNCIODEBUG": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", "0", *args],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._listening.wait(30) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError("prefit serve did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if "prefit listening on" in line:
                self.port = orjson.loads(line)["port"]
                self._listening.set()
        self._listening.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def records(self, logger: str = "prefit.access") -> list[dict[str, object]]:
        out = []
        for line in list(self.lines):
            if line.startswith("{"):
                entry = orjson.loads(line)
                if entry.get("logger") == logger:
                    out.append(entry)
        return out

    def metrics(self, key: str | None = None) -> str:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(self.url + "/metrics", headers=headers, timeout=10).text

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(5)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll a condition under a generous guard: for effects with no event to wait on (a reload, an
    expiry). Speed is measured in benchmarks/, never asserted here."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    """A port nothing listens on right now (for an upstream that must be unreachable)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture(scope="module")
def start_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A factory: ``start_gateway(files, *args, prepare=fn)`` writes a config directory, lets ``prepare``
    fill it (say, ``prefit ingest``), and serves it."""
    started: list[GatewayProcess] = []

    def start(files: dict[str, str], *args: str, prepare: Callable[[Path], None] | None = None) -> GatewayProcess:
        workdir = tmp_path_factory.mktemp("gateway")
        write_files(workdir, files)
        if prepare is not None:
            prepare(workdir)
        gateway = GatewayProcess(workdir, list(args))
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="session")
def faulty_upstream() -> Iterator[object]:
    from tests.fakes.faulty import FaultyUpstream

    upstream = FaultyUpstream().start()
    yield upstream
    upstream.stop()
