"""Child processes for benchmarks: pinned to a core, logged to a file, and always stopped.

Each child runs in its own session (process group), so stopping it also stops whatever it
started. ``Children`` is a context manager: leaving the block, by return, exception, Ctrl-C or
a SIGTERM turned into ``SystemExit``, sends SIGTERM to every group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["Children", "tail", "wait_for_json_line"]

STOP_TIMEOUT_S = 10.0


class Children:
    """The child processes of one benchmark run."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()

    def start(
        self,
        command: Sequence[str],
        *,
        log_path: Path,
        cwd: Path,
        cpu: int | None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` with stdout and stderr going to ``log_path``, pinned to ``cpu`` if given."""
        log = log_path.open("wb")
        self._logs.append(log)
        proc = subprocess.Popen(
            _pinned(command, cpu), stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True
        )
        self._procs.append(proc)
        return proc

    def stop_all(self) -> None:
        """SIGTERM every process group, wait, then SIGKILL what is left."""
        for proc in self._procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        for log in self._logs:
            log.close()
        self._procs.clear()
        self._logs.clear()


def _pinned(command: Sequence[str], cpu: int | None) -> list[str]:
    if cpu is None:
        return list(command)
    if shutil.which("taskset") is None:
        raise RuntimeError("taskset (util-linux) is needed to pin processes; pass --no-pin to run unpinned")
    return ["taskset", "-c", str(cpu), *command]


def _signal_group(proc: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)


def wait_for_json_line(
    log_path: Path, proc: subprocess.Popen[bytes], needle: str, name: str, timeout_s: float = 30.0
) -> dict[str, Any]:
    """Poll ``log_path`` until a JSON line containing ``needle`` appears; fail if ``proc`` exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if needle in line and line.lstrip().startswith("{"):
                parsed: dict[str, Any] = json.loads(line)
                return parsed
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail(log_path)}")
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not start within {timeout_s:g} s:\n{tail(log_path)}")


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
