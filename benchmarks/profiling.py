"""Where the gateway's core goes during a run: CPU accounting from /proc, and py-spy samples.

``CpuClock`` reads a process's user and system CPU seconds from ``/proc/<pid>/stat``, so a run can
report how busy the gateway was and how much of that was the kernel (loopback TCP, writes).
``CoreClock`` reads one core's busy time from ``/proc/stat``: what it shows beyond the gateway's
own use is other processes' load on the gateway's core, which makes a run's figures suspect.
``pyspy_command`` builds a bounded ``py-spy record`` in collapsed-stack ("raw") form, and
``top_functions`` turns such a file into self and inclusive shares per function, and
``package_shares`` into the share of samples whose innermost Python frame is in each package.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CoreClock",
    "CpuClock",
    "CpuShare",
    "FunctionShare",
    "package_shares",
    "pyspy_command",
    "pyspy_path",
    "top_functions",
]

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
_LINE_NUMBER = re.compile(r":\d+\)$")
_FRAME_FILE = re.compile(r"\(([^()]*)\)$")
#: The innermost frame of an event-loop sample with no Python callback running: uvloop's C code.
_EVENT_LOOP_FRAMES = ("Runner.run (asyncio/runners.py)",)


@dataclass(frozen=True, slots=True)
class CpuShare:
    """A process's CPU use over a wall-clock interval, as fractions of one core."""

    user: float
    system: float

    @property
    def total(self) -> float:
        return self.user + self.system

    def as_dict(self) -> dict[str, float]:
        return {"user": round(self.user, 3), "system": round(self.system, 3), "total": round(self.total, 3)}


class CpuClock:
    """Started at construction; ``share()`` gives the CPU use of ``pid`` since then."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._wall = time.monotonic()
        self._user, self._system = _process_seconds(pid)

    def share(self) -> CpuShare:
        wall = max(time.monotonic() - self._wall, 1e-9)
        user, system = _process_seconds(self.pid)
        return CpuShare((user - self._user) / wall, (system - self._system) / wall)


class CoreClock:
    """Started at construction; ``busy()`` gives the fraction of time core ``cpu`` was busy since then."""

    def __init__(self, cpu: int) -> None:
        self.cpu = cpu
        self._wall = time.monotonic()
        self._busy = _core_busy_seconds(cpu)

    def busy(self) -> float:
        wall = max(time.monotonic() - self._wall, 1e-9)
        return (_core_busy_seconds(self.cpu) - self._busy) / wall


def _process_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces; skip past it
    return int(fields[11]) / _TICKS_PER_SECOND, int(fields[12]) / _TICKS_PER_SECOND


def _core_busy_seconds(cpu: int) -> float:
    """Seconds core ``cpu`` spent neither idle nor waiting for I/O, from /proc/stat."""
    prefix = f"cpu{cpu} "
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(prefix):
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / _TICKS_PER_SECOND
    raise RuntimeError(f"no line for cpu{cpu} in /proc/stat")


# -- py-spy -----------------------------------------------------------------------------------------


def pyspy_path() -> str | None:
    """py-spy from this virtualenv, else from PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def pyspy_command(pid: int, output: Path, seconds: int, rate: int = 100) -> list[str]:
    """A ``py-spy record`` of ``pid`` that stops by itself (pausing it briefly per sample, for exact stacks)."""
    executable = pyspy_path()
    if executable is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    options = ["--rate", str(rate), "--duration", str(seconds), "--gil", "--nolineno", "--format", "raw"]
    return [executable, "record", "--pid", str(pid), *options, "--output", str(output)]


@dataclass(frozen=True, slots=True)
class FunctionShare:
    """One function's share of the samples: on top of the stack (self) or anywhere in it (inclusive)."""

    function: str
    self_share: float
    inclusive_share: float

    def as_dict(self) -> dict[str, object]:
        return {
            "function": self.function,
            "self": round(self.self_share, 4),
            "inclusive": round(self.inclusive_share, 4),
        }


def _stacks(raw_path: Path) -> list[tuple[list[str], int]]:
    """Each collapsed stack as its frames (line numbers removed, outermost first) and its sample count."""
    stacks = []
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            stacks.append(([_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")], int(count_text)))
    return stacks


def top_functions(raw_path: Path, limit: int = 20) -> tuple[int, list[FunctionShare]]:
    """The ``limit`` functions with the most self samples in a collapsed-stack file, and the sample count."""
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for frames, count in _stacks(raw_path):
        total += count
        self_samples[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if total == 0:
        return 0, []
    return total, [
        FunctionShare(function, count / total, inclusive[function] / total)
        for function, count in self_samples.most_common(limit)
    ]


def package_shares(raw_path: Path) -> list[tuple[str, float]]:
    """Share of samples per package of the innermost frame (C code counts for the Python caller's package)."""
    samples: Counter[str] = Counter()
    for frames, count in _stacks(raw_path):
        samples[_package(frames[-1])] += count
    total = sum(samples.values())
    return [(package, count / total) for package, count in samples.most_common()] if total else []


def _package(frame: str) -> str:
    if frame in _EVENT_LOOP_FRAMES:
        return "event loop (uvloop, C)"
    match = _FRAME_FILE.search(frame)
    if match is None:
        return "(unknown)"
    path = match.group(1)
    return path.split("/", 1)[0] if "/" in path else path
