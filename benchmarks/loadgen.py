"""Bounded closed-loop HTTP load: wrk when it is installed, else a small aiohttp client.

Both generators keep ``concurrency`` keep-alive connections busy with the same POST for a fixed
time after a warm-up, and report completed requests per second and the 50th and 99th latency
percentiles. Every run is bounded in time (and, for the Python generator, in request count).
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import uvloop

__all__ = ["LoadResult", "python_load", "wrk_available", "wrk_load"]

_WRK_MARKER = "PREFIT_WRK "
#: wrk's ``done`` hook prints one JSON line after this marker; latencies are in microseconds.
_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%.1f,"p99_us":%.1f}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
_REQUEST_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one measured run did; ``errors`` counts failed requests (non-2xx included)."""

    generator: str
    concurrency: int
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# -- wrk ------------------------------------------------------------------------------------------


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _write_wrk_script(directory: Path, body: bytes) -> Path:
    text = body.decode()
    if "]==]" in text:
        raise ValueError("the request body cannot be embedded in a Lua long string")
    script = directory / "post.lua"
    script.write_text(_WRK_SCRIPT.format(body=text, marker=_WRK_MARKER))
    return script


def _run_wrk(url: str, script: Path, concurrency: int, seconds: int, cpu: int | None) -> dict[str, float]:
    """One wrk run; returns the JSON its ``done`` hook printed. Raises ``RuntimeError`` on failure."""
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", f"--timeout={_REQUEST_TIMEOUT_S:g}s"]
    command += ["-s", str(script), url]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpu), *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(_WRK_MARKER):
            parsed: dict[str, float] = json.loads(line.removeprefix(_WRK_MARKER))
            return parsed
    raise RuntimeError(f"wrk failed (exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


def wrk_load(
    url: str, body: bytes, *, concurrency: int, seconds: int, warmup: int, workdir: Path, cpu: int | None
) -> LoadResult:
    """Warm up, then measure with wrk (one thread, ``concurrency`` connections)."""
    script = _write_wrk_script(workdir, body)
    if warmup > 0:
        _run_wrk(url, script, concurrency, warmup, cpu)
    stats = _run_wrk(url, script, concurrency, seconds, cpu)
    elapsed = stats["duration_us"] / 1e6
    requests = int(stats["requests"])
    errors = int(sum(stats[kind] for kind in ("connect", "read", "write", "status", "timeout")))
    return LoadResult(
        generator="wrk",
        concurrency=concurrency,
        seconds=round(elapsed, 3),
        requests=requests,
        errors=errors,
        rps=requests / elapsed if elapsed else 0.0,
        p50_ms=stats["p50_us"] / 1000,
        p99_ms=stats["p99_us"] / 1000,
    )


# -- Python fallback ------------------------------------------------------------------------------


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (``nan`` when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


async def _closed_loop(
    session: aiohttp.ClientSession, url: str, body: bytes, concurrency: int, seconds: float, max_requests: int
) -> tuple[list[float], int, float]:
    """``concurrency`` workers posting back to back until the deadline or the request budget runs out."""
    latencies: list[float] = []
    errors = 0
    headers = {"Content-Type": "application/json"}
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline and len(latencies) + errors < max_requests:
            sent = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = 200 <= response.status < 300
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - sent)
            else:
                errors += 1

    async with asyncio.timeout(seconds + _REQUEST_TIMEOUT_S + 5):
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - start


async def _python_measure(
    url: str, body: bytes, concurrency: int, seconds: float, warmup: float, max_requests: int
) -> LoadResult:
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if warmup > 0:
            await _closed_loop(session, url, body, concurrency, warmup, max_requests)
        latencies, errors, elapsed = await _closed_loop(session, url, body, concurrency, seconds, max_requests)
    latencies.sort()
    return LoadResult(
        generator="python-aiohttp",
        concurrency=concurrency,
        seconds=round(elapsed, 3),
        requests=len(latencies) + errors,
        errors=errors,
        rps=len(latencies) / elapsed if elapsed else 0.0,
        p50_ms=_percentile(latencies, 0.50) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
    )


def python_load(
    url: str, body: bytes, *, concurrency: int, seconds: float, warmup: float, max_requests: int = 2_000_000
) -> LoadResult:
    """Warm up, then measure with an aiohttp client in this process (on whatever core it is pinned to)."""
    return uvloop.run(_python_measure(url, body, concurrency, seconds, warmup, max_requests))
