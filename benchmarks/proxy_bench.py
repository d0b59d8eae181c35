"""Prefit's core-gateway benchmark: what does one policy hop add over calling the upstream directly?

One command starts a very fast fake OpenAI upstream (``fast_upstream.py``, pinned to the load core),
writes a temporary ``prefit.yaml`` and a ``bench-bot`` policy pointing at it, starts
``prefit serve --port 0`` pinned to the gateway core, and runs the same bounded closed-loop load of
non-streaming chat completions (a) straight at the upstream and (b) through Prefit, at each
concurrency. It prints req/s, p50 and p99 for each, the latency Prefit adds and the through/direct
ratios, and compares them with the targets: at most 0.5 ms added p50 at concurrency 1, and at least
3,000 req/s at concurrency 32 through Prefit on one core.

    .venv/bin/python benchmarks/proxy_bench.py [--duration 10] [--warmup 2] [--concurrency 1,32]
                                               [--loadgen auto|wrk|python] [--json out.json] [--check]

wrk (Debian package ``wrk``) is the load generator when installed, else an aiohttp client in this
process. Only 127.0.0.1 is used; every child runs in its own process group and is stopped on exit,
failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from loadgen import LoadResult, python_load, wrk_available, wrk_load
from profiling import CpuClock, CpuShare, pyspy_command, pyspy_path, top_functions
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
POLICY = "bench-bot"
CHAT_PATH = "/v1/chat/completions"
REQUEST_BODY = json.dumps(
    {
        "model": POLICY,
        "messages": [{"role": "user", "content": "Reply with one short, friendly greeting."}],
        "user": "bench",
    },
    separators=(",", ":"),
).encode()
TARGET_ADDED_P50_MS = 0.5
TARGET_RPS_C32 = 3000.0
PACKAGES = ("prefit", "aiohttp", "starlette", "uvicorn", "uvloop", "httptools", "orjson", "pydantic")
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PROFILE_TOP = 25

console = Console(width=None if sys.stdout.isatty() else 110)


# -- child processes --------------------------------------------------------------------------------


class Children:
    """Child processes, each in its own session (process group), all stopped when the block ends."""

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


def wait_for_json_line(log_path: Path, proc: subprocess.Popen[bytes], needle: str, name: str) -> dict[str, Any]:
    """Poll ``log_path`` until a JSON line containing ``needle`` appears; fail if ``proc`` exits or times out."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if needle in line and line.lstrip().startswith("{"):
                parsed: dict[str, Any] = json.loads(line)
                return parsed
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{_tail(log_path)}")
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not start within {STARTUP_TIMEOUT_S:g} s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- setup ----------------------------------------------------------------------------------------


def write_gateway_config(directory: Path, upstream_port: int, *, access_log: bool) -> Path:
    """A ``prefit.yaml`` whose only upstream is the fast one, and the ``bench-bot`` policy."""
    policies = directory / "policies"
    policies.mkdir()
    (policies / f"{POLICY}.yaml").write_text(
        "description: Benchmark policy; maps onto gpt-4o-mini with fixed parameters.\n"
        "upstream: fast\n"
        "upstream_model: gpt-4o-mini\n"
        "params: {temperature: 0, max_tokens: 64}\n"
    )
    settings = directory / "prefit.yaml"
    settings.write_text(
        "upstreams:\n"
        f"  fast: {{base_url: http://{HOST}:{upstream_port}/v1, api_key: sk-bench-not-a-real-key}}\n"
        "default_upstream: fast\n"
        "policies_dir: policies\n"
        f"access_log: {'true' if access_log else 'false'}\n"
    )
    return settings


def start_upstream(children: Children, workdir: Path, cpu: int | None) -> int:
    log_path = workdir / "upstream.log"
    command = [sys.executable, str(HERE / "fast_upstream.py"), "--host", HOST, "--port", "0"]
    proc = children.start(command, log_path=log_path, cwd=workdir, cpu=cpu)
    return int(wait_for_json_line(log_path, proc, '"listening"', "fast upstream")["port"])


def _prefit_command() -> list[str]:
    script = Path(sys.executable).with_name("prefit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


def gateway_source(rev: str | None, workdir: Path) -> tuple[str, dict[str, str] | None]:
    """Which gateway code runs: the work tree as installed, or ``rev`` exported with ``git archive``.

    Returns a description (commit, and whether the work tree has changes) and the environment for
    ``prefit serve``: an exported revision comes first on PYTHONPATH, ahead of the editable install.
    """
    repo = HERE.parent
    if rev is None:
        commit = _git(repo, "rev-parse", "--short", "HEAD")
        dirty = _git(repo, "status", "--porcelain", "--", "gateway", "middleware")
        return f"work tree at {commit}{' with uncommitted changes' if dirty else ''}", None
    commit = _git(repo, "rev-parse", "--short", f"{rev}^{{commit}}")
    source = workdir / "src"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(repo), "archive", commit], capture_output=True, check=True, timeout=60)
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True, timeout=60)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))}
    return f"revision {commit} ({rev})", env


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def start_gateway(
    children: Children, workdir: Path, settings: Path, cpu: int | None, env: dict[str, str] | None
) -> tuple[int, int]:
    """Start ``prefit serve`` and return its (pid, port) once it announces it is listening."""
    log_path = workdir / "prefit.log"
    command = [*_prefit_command(), "serve", "--config", str(settings), "--host", HOST, "--port", "0"]
    proc = children.start(command, log_path=log_path, cwd=workdir, cpu=cpu, env=env)
    port = int(wait_for_json_line(log_path, proc, "prefit listening on", "prefit serve")["port"])
    return proc.pid, port


def check_reply(url: str, *, expect_policy: str | None) -> None:
    """One request before the load: a 200 chat completion (and Prefit's policy header through the gateway)."""
    request = urllib.request.Request(url, data=REQUEST_BODY, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        reply = json.loads(response.read())
        policy = response.headers.get("x-prefit-policy")
    if reply.get("object") != "chat.completion" or "usage" not in reply:
        raise RuntimeError(f"unexpected reply from {url}: {reply}")
    if expect_policy is not None and policy != expect_policy:
        raise RuntimeError(f"{url} answered without x-prefit-policy: {expect_policy} (got {policy!r})")


# -- measuring ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measurement:
    """One run: which target, what the load generator saw, and (through Prefit) the gateway's CPU use."""

    target: str
    result: LoadResult
    gateway_cpu: CpuShare | None = None
    profile: Path | None = None


@dataclass(frozen=True, slots=True)
class Gateway:
    pid: int
    url: str


def measure(url: str, concurrency: int, args: argparse.Namespace, workdir: Path) -> LoadResult:
    if args.loadgen == "wrk":
        return wrk_load(
            url,
            REQUEST_BODY,
            concurrency=concurrency,
            seconds=args.duration,
            warmup=args.warmup,
            workdir=workdir,
            cpu=args.load_cpu,
        )
    return python_load(url, REQUEST_BODY, concurrency=concurrency, seconds=args.duration, warmup=args.warmup)


def measure_gateway(
    gateway: Gateway, concurrency: int, args: argparse.Namespace, workdir: Path, children: Children
) -> Measurement:
    """Measure through Prefit, timing the gateway's CPU and, with ``--profile``, sampling it with py-spy."""
    profile: Path | None = None
    spy: subprocess.Popen[bytes] | None = None
    if args.profile is not None:
        profile = args.profile / f"prefit-c{concurrency}.collapsed.txt"
        command = pyspy_command(gateway.pid, profile, args.warmup + args.duration)
        spy = children.start(command, log_path=workdir / f"py-spy-c{concurrency}.log", cwd=workdir, cpu=args.load_cpu)
    clock = CpuClock(gateway.pid)
    result = measure(gateway.url, concurrency, args, workdir)
    cpu = clock.share()
    if spy is not None and spy.wait(timeout=STARTUP_TIMEOUT_S) != 0:
        raise RuntimeError(f"py-spy failed:\n{_tail(workdir / f'py-spy-c{concurrency}.log')}")
    return Measurement("prefit", result, cpu, profile)


def run_matrix(
    direct_url: str, gateway: Gateway, args: argparse.Namespace, workdir: Path, children: Children
) -> list[Measurement]:
    measurements = []
    for concurrency in args.concurrency:
        console.print(f"[dim]measuring direct at concurrency {concurrency} ({args.loadgen})...[/dim]")
        measurements.append(Measurement("direct", measure(direct_url, concurrency, args, workdir)))
        console.print(f"[dim]measuring prefit at concurrency {concurrency} ({args.loadgen})...[/dim]")
        measurements.append(measure_gateway(gateway, concurrency, args, workdir, children))
    return measurements


# -- reporting ------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, Python and the versions of the packages on the hot path."""
    cpu_model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "wrk": _wrk_version(),
    }


def _wrk_version() -> str | None:
    if not wrk_available():
        return None
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10, check=False)
    return (done.stdout or done.stderr).splitlines()[0].strip() if (done.stdout or done.stderr) else "unknown"


def comparison(measurements: list[Measurement]) -> list[dict[str, float]]:
    """Per concurrency: what going through Prefit adds over the direct call."""
    by_key = {(m.target, m.result.concurrency): m.result for m in measurements}
    rows = []
    for concurrency in sorted({m.result.concurrency for m in measurements}):
        direct, through = by_key.get(("direct", concurrency)), by_key.get(("prefit", concurrency))
        if direct is None or through is None:
            continue
        rows.append(
            {
                "concurrency": concurrency,
                "added_p50_ms": through.p50_ms - direct.p50_ms,
                "added_p99_ms": through.p99_ms - direct.p99_ms,
                "rps_ratio": through.rps / direct.rps if direct.rps else 0.0,
                "p50_ratio": through.p50_ms / direct.p50_ms if direct.p50_ms else 0.0,
            }
        )
    return rows


def verdicts(measurements: list[Measurement], compared: list[dict[str, float]]) -> list[dict[str, Any]]:
    """The two targets of the core-gateway issue, each with its measured value (None when not measured)."""
    added = next((row["added_p50_ms"] for row in compared if row["concurrency"] == 1), None)
    rps32 = next((m.result.rps for m in measurements if m.target == "prefit" and m.result.concurrency == 32), None)
    return [
        {
            "name": "added p50 at concurrency 1",
            "target": f"<= {TARGET_ADDED_P50_MS} ms",
            "measured": None if added is None else round(added, 3),
            "unit": "ms",
            "passed": None if added is None else added <= TARGET_ADDED_P50_MS,
        },
        {
            "name": "req/s through Prefit at concurrency 32 (one core)",
            "target": f">= {TARGET_RPS_C32:,.0f} req/s",
            "measured": None if rps32 is None else round(rps32, 1),
            "unit": "req/s",
            "passed": None if rps32 is None else rps32 >= TARGET_RPS_C32,
        },
    ]


def print_report(info: dict[str, Any], measurements: list[Measurement], compared: list[dict[str, float]]) -> None:
    versions = ", ".join(f"{name} {version}" for name, version in info["packages"].items())
    console.print(f"[bold]machine[/bold]: {info['nproc']} x {info['cpu_model']}, Python {info['python']}")
    console.print(f"[bold]packages[/bold]: {versions}; load generator: {measurements[0].result.generator}")
    console.print(_figures_table(measurements))
    console.print(_cost_table(compared))
    for measurement in measurements:
        if measurement.profile is not None:
            console.print(_profile_table(measurement))


def _figures_table(measurements: list[Measurement]) -> Table:
    table = Table(title="Non-streaming chat completions, direct vs through Prefit")
    columns = ("target", "conc.", "req/s", "p50 ms", "p99 ms", "requests", "errors", "gateway CPU usr+sys")
    for column in columns:
        table.add_column(column, justify="left" if column == "target" else "right")
    for m in measurements:
        r = m.result
        label = "direct" if m.target == "direct" else f"prefit ({POLICY})"
        errors = f"[red]{r.errors}[/red]" if r.errors else "0"
        cpu = "-" if m.gateway_cpu is None else f"{m.gateway_cpu.user:.0%}+{m.gateway_cpu.system:.0%}"
        table.add_row(
            label,
            str(r.concurrency),
            f"{r.rps:,.0f}",
            f"{r.p50_ms:.3f}",
            f"{r.p99_ms:.3f}",
            f"{r.requests:,}",
            errors,
            cpu,
        )
    return table


def _cost_table(compared: list[dict[str, float]]) -> Table:
    table = Table(title="What the Prefit hop costs (through minus / over direct)")
    for column in ("conc.", "added p50 ms", "added p99 ms", "req/s ratio", "p50 ratio"):
        table.add_column(column, justify="right")
    for row in compared:
        table.add_row(
            str(row["concurrency"]),
            f"{row['added_p50_ms']:.3f}",
            f"{row['added_p99_ms']:.3f}",
            f"{row['rps_ratio']:.3f}",
            f"{row['p50_ratio']:.1f}x",
        )
    return table


def _profile_table(measurement: Measurement) -> Table:
    assert measurement.profile is not None
    total, functions = top_functions(measurement.profile, PROFILE_TOP)
    title = f"py-spy, concurrency {measurement.result.concurrency}: {total:,} samples ({measurement.profile.name})"
    table = Table(title=title)
    for column in ("self", "incl.", "function"):
        table.add_column(column, justify="left" if column == "function" else "right")
    for share in functions:
        table.add_row(f"{share.self_share:.1%}", f"{share.inclusive_share:.1%}", share.function or "(native)")
    return table


def print_verdicts(results: list[dict[str, Any]]) -> None:
    table = Table(title="Targets")
    for column in ("target", "goal", "measured", "result"):
        table.add_column(column)
    for verdict in results:
        measured = "not measured" if verdict["measured"] is None else f"{verdict['measured']:,} {verdict['unit']}"
        result = {True: "[green]pass[/green]", False: "[red]FAIL[/red]", None: "[yellow]n/a[/yellow]"}[
            verdict["passed"]
        ]
        table.add_row(verdict["name"], verdict["target"], measured, result)
    console.print(table)


# -- command line ---------------------------------------------------------------------------------


def _concurrency_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(value < 1 or value > 1024 for value in values):
        raise argparse.ArgumentTypeError("a comma-separated list of integers between 1 and 1024")
    return values


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per run (default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load before each run (default: 2)")
    parser.add_argument(
        "--concurrency", type=_concurrency_list, default=[1, 32], help="comma-separated list (default: 1,32)"
    )
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto", help="default: wrk if found")
    parser.add_argument("--gateway-cpu", type=int, default=0, help="core for prefit serve (default: 0)")
    parser.add_argument("--load-cpu", type=int, default=1, help="core for the upstream and load (default: 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument(
        "--rev", default=None, help="benchmark this git revision (exported with git archive), not the work tree"
    )
    parser.add_argument("--no-access-log", action="store_true", help="turn the gateway's access log off")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--profile", type=Path, default=None, metavar="DIR", help="sample the gateway with py-spy into DIR"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 600 or not 0 <= args.warmup <= 60:
        parser.error("--duration must be 1..600 and --warmup 0..60 seconds")
    if args.loadgen == "auto":
        args.loadgen = "wrk" if wrk_available() else "python"
    elif args.loadgen == "wrk" and not wrk_available():
        parser.error("wrk is not installed (apt-get install -y wrk), use --loadgen python")
    if args.profile is not None:
        if pyspy_path() is None:
            parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
        args.profile.mkdir(parents=True, exist_ok=True)
        args.profile = args.profile.resolve()
    _choose_cores(args)
    return args


def _choose_cores(args: argparse.Namespace) -> None:
    """Pin the gateway and the load side apart, or not at all on a one-core machine or with --no-pin."""
    available = os.sched_getaffinity(0)
    if not args.no_pin and {args.gateway_cpu, args.load_cpu} <= available and args.gateway_cpu != args.load_cpu:
        return
    if not args.no_pin:
        console.print("[yellow]cannot pin the gateway and the load to two different cores; running unpinned[/yellow]")
    args.gateway_cpu = args.load_cpu = None


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="prefit-bench-") as name:
        yield Path(name)


def run(args: argparse.Namespace, workdir: Path) -> tuple[str, list[Measurement]]:
    """Start both servers and measure every target at every concurrency; stop them whatever happens.

    Returns which gateway code ran and the measurements.
    """
    source, env = gateway_source(args.rev, workdir)
    console.print(f"[dim]gateway code: {source}[/dim]")
    with Children() as children:
        upstream_port = start_upstream(children, workdir, args.load_cpu)
        settings = write_gateway_config(workdir, upstream_port, access_log=not args.no_access_log)
        gateway_pid, gateway_port = start_gateway(children, workdir, settings, args.gateway_cpu, env)
        direct_url = f"http://{HOST}:{upstream_port}{CHAT_PATH}"
        gateway = Gateway(gateway_pid, f"http://{HOST}:{gateway_port}{CHAT_PATH}")
        check_reply(direct_url, expect_policy=None)
        try:
            check_reply(gateway.url, expect_policy=POLICY)
        except (OSError, RuntimeError) as exc:
            raise RuntimeError(f"prefit did not answer correctly ({exc}):\n{_tail(workdir / 'prefit.log', 5)}") from exc
        console.print(f"[dim]upstream :{upstream_port}, prefit :{gateway_port} (pid {gateway_pid})[/dim]")
        return source, run_matrix(direct_url, gateway, args, workdir, children)


def build_report(args: argparse.Namespace, source: str, measurements: list[Measurement]) -> dict[str, Any]:
    """Everything ``--json`` writes: the command, its settings, the machine, figures and verdicts."""
    compared = comparison(measurements)
    return {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "gateway_code": source,
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "loadgen": args.loadgen,
            "gateway_cpu": args.gateway_cpu,
            "load_cpu": args.load_cpu,
            "access_log": not args.no_access_log,
            "request_body": json.loads(REQUEST_BODY),
        },
        "machine": machine_info(),
        "results": [_result_dict(m) for m in measurements],
        "comparison": compared,
        "targets": verdicts(measurements, compared),
    }


def _result_dict(measurement: Measurement) -> dict[str, Any]:
    entry: dict[str, Any] = {"target": measurement.target, **measurement.result.as_dict()}
    if measurement.gateway_cpu is not None:
        entry["gateway_cpu"] = measurement.gateway_cpu.as_dict()
    if measurement.profile is not None:
        total, functions = top_functions(measurement.profile, PROFILE_TOP)
        entry["profile"] = {
            "collapsed_stacks": str(measurement.profile),
            "samples": total,
            "top_self": [
                {"function": f.function, "self": round(f.self_share, 4), "inclusive": round(f.inclusive_share, 4)}
                for f in functions
            ],
        }
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    if args.load_cpu is not None:
        os.sched_setaffinity(0, {args.load_cpu})  # the Python load generator, if used, runs here
    try:
        with _workdir() as workdir:
            source, measurements = run(args, workdir)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        console.print(f"[red]benchmark failed:[/red] {exc}")
        return 2
    report = build_report(args, source, measurements)
    print_report(report["machine"], measurements, report["comparison"])
    print_verdicts(report["targets"])
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"results written to {args.json}")
    failed = any(verdict["passed"] is False for verdict in report["targets"])
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
