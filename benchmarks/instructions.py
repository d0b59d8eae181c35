"""CPU instructions per request through Prefit, counted by valgrind's callgrind: a figure that does not
move when other processes load the machine, so two revisions can be compared on a busy host.

    .venv/bin/python benchmarks/instructions.py [--rev GIT_REV | --source DIR] [--requests 300]
        [--stream] [--api chat|responses] [--json out.json]

It starts the same fast fake upstream and ``bench-bot`` policy as ``proxy_bench.py`` (a system
prompt, parameters, no cache), starts ``prefit serve`` under ``valgrind --tool=callgrind`` with
instrumentation off, warms the gateway up, turns instrumentation on for exactly ``--requests``
sequential chat completions (``callgrind_control``), and divides the instructions counted by the
requests. Wall-clock figures under valgrind mean nothing; the instruction count is what to compare.
``--api responses`` sends the same question to ``POST /v1/responses`` instead (the upstream set to
``responses_api: translate``, since the fake upstream speaks chat), so the Responses path's cost
stands beside the chat path's.
Debian packages ``valgrind`` (callgrind_control comes with it). Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from processes import Children, wait_for_json_line
from proxy_bench import CHAT_PATH, HOST, REQUEST_BODY, check_reply, gateway_source, start_upstream, write_gateway_config

_STREAM_BODY = REQUEST_BODY[:-1] + b',"stream":true}'
_RESPONSES_PATH = "/v1/responses"
_RESPONSES_BODY = json.dumps(
    {"model": "bench-bot", "input": "Reply with one short, friendly greeting.", "user": "bench"}, separators=(",", ":")
).encode()


def _request(url: str, body: bytes) -> None:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()


def _callgrind_control(*args: str) -> str:
    done = subprocess.run(["callgrind_control", *args], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"callgrind_control {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _instructions(out_dir: Path) -> int:
    """The sum of ``summary:``/``totals:`` Ir over every dump callgrind wrote after the toggle."""
    total = 0
    for dump in sorted(out_dir.glob("callgrind.out*")):
        text = dump.read_text(errors="replace")
        found = re.findall(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
        if found:
            total += int(found[-1])
    return total


def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    out_dir = workdir / "callgrind"
    out_dir.mkdir()
    with Children() as children:
        upstream_port = start_upstream(children, workdir, None)
        settings = write_gateway_config(workdir, upstream_port, access_log=True, cache=False)
        if args.api == "responses":
            text = settings.read_text().replace(
                "sk-bench-not-a-real-key}", "sk-bench-not-a-real-key, responses_api: translate}"
            )
            settings.write_text(text)
        source, env = gateway_source(args, workdir)
        log_path = workdir / "prefit.log"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out_dir}/callgrind.out.%p",
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(settings),
            "--host",
            HOST,
            "--port",
            "0",
        ]
        proc = children.start(command, log_path=log_path, cwd=workdir, cpu=None, env=env)
        port = int(wait_for_json_line(log_path, proc, "prefit listening on", "prefit serve", timeout_s=600)["port"])
        if args.api == "responses":
            url = f"http://{HOST}:{port}{_RESPONSES_PATH}"
            body = _RESPONSES_BODY[:-1] + b',"stream":true}' if args.stream else _RESPONSES_BODY
            _request(url, body)
        else:
            url = f"http://{HOST}:{port}{CHAT_PATH}"
            check_reply(url, expect_policy="bench-bot")
            body = _STREAM_BODY if args.stream else REQUEST_BODY
        for _ in range(args.warmup):
            _request(url, body)
        _callgrind_control("--instr=on", str(proc.pid))
        started = time.monotonic()
        for _ in range(args.requests):
            _request(url, body)
        elapsed = time.monotonic() - started
        _callgrind_control("--dump", str(proc.pid))
        _callgrind_control("--instr=off", str(proc.pid))
    instructions = _instructions(out_dir)
    return {
        "gateway": source,
        "requests": args.requests,
        "stream": args.stream,
        "api": args.api,
        "instructions": instructions,
        "instructions_per_request": round(instructions / args.requests),
        "seconds_under_valgrind": round(elapsed, 1),
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests counted (default: 300)")
    parser.add_argument("--warmup", type=int, default=50, help="requests before counting (default: 50)")
    parser.add_argument("--stream", action="store_true", help="streamed chat completions instead of whole ones")
    parser.add_argument("--api", choices=["chat", "responses"], default="chat", help="which endpoint (default: chat)")
    parser.add_argument("--rev", default=None, help="count this git revision (via git archive), not the work tree")
    parser.add_argument("--source", type=Path, default=None, help="count the gateway code in this directory")
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON")
    parser.add_argument("--no-pin", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="prefit-instructions-") as tmp:
        result = run(args, Path(tmp))
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
