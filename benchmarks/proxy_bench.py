"""Prefit's core-gateway benchmark: what does one policy hop add over calling the upstream directly?

One command starts a very fast fake OpenAI upstream (``fast_upstream.py``, pinned to the load core),
writes a temporary ``prefit.yaml`` and a ``bench-bot`` policy pointing at it, starts
``prefit serve --port 0`` pinned to the gateway core, and runs the same bounded closed-loop load of
non-streaming chat completions (a) straight at the upstream and (b) through Prefit, at each
concurrency. It prints req/s, p50 and p99 for each, the latency Prefit adds and the through/direct
ratios, and compares them with the targets: at most 0.5 ms added p50 at concurrency 1, and at least
3,000 req/s at concurrency 32 through Prefit on one core.

    .venv/bin/python benchmarks/proxy_bench.py [--duration 10] [--warmup 2] [--concurrency 1,32]
        [--repeat N] [--loadgen auto|wrk|python] [--rev GIT_REV | --source DIR] [--no-access-log]
        [--cache] [--profile DIR] [--json out.json] [--check]

Each run also records the gateway's CPU time (user and system) and how much of its core other
processes used meanwhile, since a shared machine otherwise makes the figures look worse than the
gateway is. ``benchmarks/RESULTS.md`` holds measured figures and profiling findings.

wrk (Debian package ``wrk``) is the load generator when installed, else an aiohttp client in this
process; either runs on the load core beside the upstream. Only 127.0.0.1 is used; every run is
bounded in time, and every child runs in its own process group and is stopped on exit, failure,
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from loadgen import LoadResult, python_load, wrk_available, wrk_load
from processes import Children, tail, wait_for_json_line
from profiling import CoreClock, CpuClock, pyspy_command, pyspy_path
from report import (
    Measurement,
    comparison,
    cost_table,
    figures_table,
    foreign_load_warning,
    machine_info,
    profile_table,
    summarize,
    verdict_table,
    verdicts,
)
from rich.console import Console

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
PROFILE_TOP = 25

console = Console(width=None if sys.stdout.isatty() else 150)


# -- the two servers ------------------------------------------------------------------------------


def write_gateway_config(directory: Path, upstream_port: int, *, access_log: bool, cache: bool) -> Path:
    """A ``prefit.yaml`` whose only upstream is the fast one, and the ``bench-bot`` policy.

    With temperature 0 the policy's answers are cacheable; unless ``cache`` is set, the policy turns
    the response cache off so that every request really goes through to the upstream.
    """
    policies = directory / "policies"
    policies.mkdir()
    (policies / f"{POLICY}.yaml").write_text(
        "description: Benchmark policy; maps onto gpt-4o-mini with fixed parameters.\n"
        "upstream: fast\n"
        "upstream_model: gpt-4o-mini\n"
        "params: {temperature: 0, max_tokens: 64}\n" + ("" if cache else "cache: {mode: never}\n")
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
    """Start ``fast_upstream.py`` and return its port once it listens."""
    log_path = workdir / "upstream.log"
    command = [sys.executable, str(HERE / "fast_upstream.py"), "--host", HOST, "--port", "0"]
    proc = children.start(command, log_path=log_path, cwd=workdir, cpu=cpu)
    return int(wait_for_json_line(log_path, proc, '"listening"', "fast upstream")["port"])


def gateway_source(args: argparse.Namespace, workdir: Path) -> tuple[str, dict[str, str] | None]:
    """Which gateway code runs: the work tree as installed, a git revision, or a source directory.

    Returns a description and the environment for ``prefit serve``: an exported revision (``--rev``,
    via ``git archive``) or a directory (``--source``) comes first on PYTHONPATH, ahead of the
    editable install, so two versions of the gateway can be compared on the same machine.
    """
    repo = HERE.parent
    if args.source is not None:
        return f"source directory {args.source}", _pythonpath_env(args.source)
    if args.rev is None:
        commit = _git(repo, "rev-parse", "--short", "HEAD")
        dirty = _git(repo, "status", "--porcelain", "--", "gateway", "middleware")
        return f"work tree at {commit}{' with uncommitted changes' if dirty else ''}", None
    commit = _git(repo, "rev-parse", "--short", f"{args.rev}^{{commit}}")
    source = workdir / "src"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(repo), "archive", commit], capture_output=True, check=True, timeout=60)
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True, timeout=60)
    return f"revision {commit} ({args.rev})", _pythonpath_env(source)


def _pythonpath_env(source: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))}


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _prefit_command() -> list[str]:
    script = Path(sys.executable).with_name("prefit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


def start_gateway(
    children: Children, workdir: Path, settings: Path, cpu: int | None, env: dict[str, str] | None
) -> tuple[int, int]:
    """Start ``prefit serve`` and return its (pid, port) once it announces it is listening."""
    log_path = workdir / "prefit.log"
    command = [*_prefit_command(), "serve", "--config", str(settings), "--host", HOST, "--port", "0"]
    proc = children.start(command, log_path=log_path, cwd=workdir, cpu=cpu, env=env)
    port = int(wait_for_json_line(log_path, proc, "prefit listening on", "prefit serve")["port"])
    return proc.pid, port


def check_reply(url: str, *, expect_policy: str | None) -> dict[str, str]:
    """One request before the load: a 200 chat completion (and Prefit's policy header through the gateway).

    Returns the response headers, lower-cased.
    """
    request = urllib.request.Request(url, data=REQUEST_BODY, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        reply = json.loads(response.read())
        headers = {name.lower(): value for name, value in response.headers.items()}
    if reply.get("object") != "chat.completion" or "usage" not in reply:
        raise RuntimeError(f"unexpected reply from {url}: {reply}")
    if expect_policy is not None and headers.get("x-prefit-policy") != expect_policy:
        raise RuntimeError(f"{url} answered without x-prefit-policy: {expect_policy} (got {headers!r})")
    return headers


def check_gateway(url: str, *, cache: bool) -> None:
    """Two requests through Prefit; unless ``cache``, the second must not be a response-cache hit."""
    check_reply(url, expect_policy=POLICY)
    second = check_reply(url, expect_policy=POLICY)
    if not cache and second.get("x-prefit-cache") == "hit":
        raise RuntimeError("the gateway answered from its response cache: the load would not reach the upstream")


# -- measuring ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bench:
    """What every run needs: the options, the scratch directory, the children and both addresses."""

    args: argparse.Namespace
    workdir: Path
    children: Children
    direct_url: str
    gateway_url: str
    gateway_pid: int


def load(bench: Bench, url: str, concurrency: int) -> LoadResult:
    """Warm up, then one measured run of the configured load generator against ``url``."""
    args = bench.args
    if args.loadgen == "wrk":
        return wrk_load(
            url,
            REQUEST_BODY,
            concurrency=concurrency,
            seconds=args.duration,
            warmup=args.warmup,
            workdir=bench.workdir,
            cpu=args.load_cpu,
        )
    return python_load(url, REQUEST_BODY, concurrency=concurrency, seconds=args.duration, warmup=args.warmup)


def measure_gateway(bench: Bench, concurrency: int, repeat: int) -> Measurement:
    """Measure through Prefit, timing the gateway's CPU and, with ``--profile``, sampling it with py-spy."""
    args = bench.args
    profile: Path | None = None
    spy: subprocess.Popen[bytes] | None = None
    spy_log = bench.workdir / f"py-spy-c{concurrency}-r{repeat}.log"
    if args.profile is not None:
        profile = args.profile / f"prefit-c{concurrency}-r{repeat}.collapsed.txt"
        command = pyspy_command(bench.gateway_pid, profile, args.warmup + args.duration)
        spy = bench.children.start(command, log_path=spy_log, cwd=bench.workdir, cpu=args.load_cpu)
    process_clock = CpuClock(bench.gateway_pid)
    core_clock = CoreClock(args.gateway_cpu) if args.gateway_cpu is not None else None
    result = load(bench, bench.gateway_url, concurrency)
    cpu = process_clock.share()
    foreign = max(0.0, core_clock.busy() - cpu.total) if core_clock is not None else None
    if spy is not None and spy.wait(timeout=30) != 0:
        raise RuntimeError(f"py-spy failed:\n{tail(spy_log)}")
    return Measurement("prefit", repeat, result, cpu, foreign, profile)


def run_matrix(bench: Bench) -> list[Measurement]:
    """Every concurrency, direct then through Prefit, ``--repeat`` times over."""
    args = bench.args
    measurements = []
    for repeat in range(1, args.repeat + 1):
        for concurrency in args.concurrency:
            note = f"concurrency {concurrency}, run {repeat}/{args.repeat}, {args.loadgen}"
            console.print(f"[dim]direct, {note}...[/dim]")
            measurements.append(Measurement("direct", repeat, load(bench, bench.direct_url, concurrency)))
            console.print(f"[dim]prefit, {note}...[/dim]")
            measurements.append(measure_gateway(bench, concurrency, repeat))
    return measurements


def run(args: argparse.Namespace, workdir: Path) -> tuple[str, list[Measurement]]:
    """Start both servers and measure; stop them whatever happens. Returns which gateway code ran, and the runs."""
    source, env = gateway_source(args, workdir)
    console.print(f"[dim]gateway code: {source}[/dim]")
    with Children() as children:
        upstream_port = start_upstream(children, workdir, args.load_cpu)
        settings = write_gateway_config(workdir, upstream_port, access_log=not args.no_access_log, cache=args.cache)
        gateway_pid, gateway_port = start_gateway(children, workdir, settings, args.gateway_cpu, env)
        bench = Bench(
            args,
            workdir,
            children,
            direct_url=f"http://{HOST}:{upstream_port}{CHAT_PATH}",
            gateway_url=f"http://{HOST}:{gateway_port}{CHAT_PATH}",
            gateway_pid=gateway_pid,
        )
        check_reply(bench.direct_url, expect_policy=None)
        try:
            check_gateway(bench.gateway_url, cache=args.cache)
        except (OSError, RuntimeError) as exc:
            raise RuntimeError(f"prefit did not answer correctly ({exc}):\n{tail(workdir / 'prefit.log', 5)}") from exc
        console.print(f"[dim]upstream :{upstream_port}, prefit :{gateway_port} (pid {gateway_pid})[/dim]")
        return source, run_matrix(bench)


# -- results --------------------------------------------------------------------------------------


def build_report(args: argparse.Namespace, source: str, measurements: list[Measurement]) -> dict[str, Any]:
    """Everything ``--json`` writes: the command, its settings, the machine, figures and verdicts."""
    summaries = summarize(measurements)
    compared = comparison(summaries)
    return {
        "command": shlex.join([".venv/bin/python", *sys.argv]),
        "gateway_code": source,
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "repeat": args.repeat,
            "loadgen": args.loadgen,
            "gateway_cpu": args.gateway_cpu,
            "load_cpu": args.load_cpu,
            "access_log": not args.no_access_log,
            "response_cache": args.cache,
            "policy": {
                "model": POLICY,
                "upstream_model": "gpt-4o-mini",
                "params": {"temperature": 0, "max_tokens": 64},
                "cache": "default" if args.cache else {"mode": "never"},
            },
            "request_body": json.loads(REQUEST_BODY),
        },
        "machine": machine_info(),
        "summary": [s.as_dict() for s in summaries],
        "comparison": compared,
        "targets": verdicts(summaries, compared),
        "warning": foreign_load_warning(summaries),
        "runs": [m.as_dict(PROFILE_TOP) for m in measurements],
    }


def print_report(report: dict[str, Any], measurements: list[Measurement]) -> None:
    info = report["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in info["packages"].items())
    console.print(f"[bold]machine[/bold]: {info['nproc']} x {info['cpu_model']}, Python {info['python']}")
    console.print(f"[bold]packages[/bold]: {versions}")
    console.print(f"[bold]gateway[/bold]: {report['gateway_code']}; load generator: {report['settings']['loadgen']}")
    console.print(figures_table(summarize(measurements), POLICY))
    console.print(cost_table(report["comparison"]))
    for measurement in measurements:
        if measurement.profile is not None and measurement.repeat == 1:
            console.print(profile_table(measurement, PROFILE_TOP))
    console.print(verdict_table(report["targets"]))
    warning = foreign_load_warning(summarize(measurements))
    if warning is not None:
        console.print(f"[yellow]warning: {warning}[/yellow]")


# -- command line ---------------------------------------------------------------------------------


def _concurrency_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(value < 1 or value > 1024 for value in values):
        raise argparse.ArgumentTypeError("a comma-separated list of integers between 1 and 1024")
    return values


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--duration", type=int, default=10, help="seconds measured per run (default: 10)")
    add("--warmup", type=int, default=2, help="seconds of unmeasured load before each run (default: 2)")
    add("--concurrency", type=_concurrency_list, default=[1, 32], help="comma-separated list (default: 1,32)")
    add("--repeat", type=int, default=1, help="runs per target and concurrency; figures are medians (default: 1)")
    add("--loadgen", choices=("auto", "wrk", "python"), default="auto", help="default: wrk if installed")
    add("--gateway-cpu", type=int, default=0, help="core for prefit serve (default: 0)")
    add("--load-cpu", type=int, default=1, help="core for the upstream and the load generator (default: 1)")
    add("--no-pin", action="store_true", help="do not pin processes to cores")
    code = parser.add_mutually_exclusive_group()
    code.add_argument("--rev", default=None, help="benchmark this git revision (via git archive), not the work tree")
    code.add_argument("--source", type=Path, default=None, help="benchmark the gateway code in this directory")
    add("--no-access-log", action="store_true", help="turn the gateway's access log off (it is on by default)")
    add(
        "--cache",
        action="store_true",
        help="leave the policy's response cache at its default (cache hits after the first request); "
        "also needed for revisions older than the cache, which reject `cache:` in a policy",
    )
    add(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample the gateway with py-spy into DIR (costs the load core some CPU)",
    )
    add("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    add("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 600 or not 0 <= args.warmup <= 60 or not 1 <= args.repeat <= 20:
        parser.error("--duration must be 1..600 s, --warmup 0..60 s and --repeat 1..20")
    if args.loadgen == "auto":
        args.loadgen = "wrk" if wrk_available() else "python"
    elif args.loadgen == "wrk" and not wrk_available():
        parser.error("wrk is not installed (apt-get install -y wrk); use --loadgen python")
    if args.source is not None:
        args.source = args.source.resolve()
        gateway = args.source / "gateway"
        if not ((gateway / "cli.py").is_file() or (gateway / "cli" / "__init__.py").is_file()):
            parser.error(f"--source {args.source} has no gateway/cli")
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
    print_report(report, measurements)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"results written to {args.json}")
    failed = any(verdict["passed"] is False for verdict in report["targets"])
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
