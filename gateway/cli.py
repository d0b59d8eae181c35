"""The ``prefit`` command: a thin layer mapping flags onto settings, as uvicorn's CLI does."""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import uvicorn

from gateway.config.load import Config, find_settings_file, load_config
from gateway.errors import ConfigError
from gateway.logs import configure_logging
from gateway.retrieval.resources import ResourceHub
from gateway.server import create_app
from gateway.settings import is_loopback_host

__all__ = ["main"]

log = logging.getLogger("prefit")

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="PREFIT_CONFIG",
    help="Settings file (default: ./prefit.yaml, else built-in defaults). Env: PREFIT_CONFIG.",
)


def _load_or_exit(config_path: Path | None, resources: ResourceHub | None = None) -> Config:
    """Load configuration, or print every problem as file:line:column and exit 1.

    With ``resources``, the layers are built against that hub and it is configured from the
    settings; the caller owns it (and closes it, or hands it to the app that will)."""
    try:
        config = load_config(find_settings_file(config_path), resources=resources)
        if resources is not None:
            resources.configure(config.settings, config.base_dir.resolve())
        return config
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(f"error: {issue}", err=True)
        click.echo(f"{len(exc.issues)} configuration error(s); nothing was started.", err=True)
        sys.exit(1)


def _bind(host: str, port: int) -> socket.socket:
    """Bind before serving so that ``--port 0`` can report the port the system chose."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # Nagle plus delayed ACKs add ~40 ms to small responses.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        click.echo(f"error: cannot listen on {host}:{port}: {exc.strerror}", err=True)
        sys.exit(1)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, announcing its real address once it accepts requests.

    SIGINT and SIGTERM ask for uvicorn's graceful shutdown (stop accepting, let requests in flight
    finish, run the lifespan shutdown); a second SIGINT forces it. uvicorn then re-raises the signal
    after draining, which click reports as ``Aborted!`` with exit 1 (and SIGTERM as death by signal,
    143): a stop that was asked for and went cleanly is exit 0 here.
    """

    def __init__(self, config: uvicorn.Config, address: tuple[str, int]) -> None:
        super().__init__(config)
        self.address = address

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        _tune_gc()
        if self.started:
            host, port = self.address
            shown = f"[{host}]" if ":" in host else host
            log.info("prefit listening on http://%s:%d", shown, port, extra={"fields": {"host": host, "port": port}})

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Route SIGINT and SIGTERM to ``handle_exit`` while serving; restore the old handlers after."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@click.group()
@click.version_option(package_name="prefit")
def main() -> None:
    """Prefit: an OpenAI-compatible gateway for prompting, retrieval and decomposition."""


@main.command()
@_config_option
@click.option("--host", default="127.0.0.1", show_default=True, envvar="PREFIT_HOST", help="Address (PREFIT_HOST).")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    envvar="PREFIT_PORT",
    help="Port, 0 for any free one (PREFIT_PORT).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    envvar="PREFIT_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(config_path: Path | None, host: str, port: int, log_level: str) -> None:
    """Serve the gateway."""
    configure_logging(log_level)
    resources = ResourceHub()
    config = _load_or_exit(config_path, resources)
    if not config.settings.keys and not is_loopback_host(host):
        log.warning(
            "no gateway keys are configured and %s is not a loopback address: anyone who can reach "
            "this port can spend your upstream credit; set `keys:` in prefit.yaml",
            host,
        )
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    server_config = uvicorn.Config(
        create_app(config, resources, settings_file=find_settings_file(config_path)),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=30,
    )
    _Server(server_config, (bound_host, bound_port)).run(sockets=[sock])


def _tune_gc() -> None:
    """Freeze what start-up allocated and collect young objects less often.

    Measured: full collections of the long-lived start-up heap paused the loop for ~90 ms every
    few seconds under load; frozen, they no longer scan it, and p99 at concurrency 32 fell ~2x.
    """
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 50_000), gen1, gen2)


@main.command()
@_config_option
def check(config_path: Path | None) -> None:
    """Validate the settings file and every policy; exit 1 listing every error."""
    config = _load_or_exit(config_path)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(config.policies)} policies from {config.policies_dir}")
    for column in ("model", "file", "variant", "weight", "upstream", "upstream model", "prompt", "layers"):
        table.add_column(column)
    for policy in config.policies.values():
        for variant in policy.variants:
            layers = ", ".join(type(layer).__name__.removesuffix("Layer").lower() for layer in variant.pipeline.layers)
            prompt = variant.prompt_version + (f" ({variant.prompt_hash})" if variant.prompt_hash else "")
            table.add_row(
                policy.name,
                policy.source,
                variant.name,
                f"{variant.weight:g}",
                variant.upstream,
                variant.upstream_model,
                prompt,
                layers,
            )
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    console.print(f"settings: {config.settings_file or 'built-in defaults'}: ok")


@main.command()
@click.argument("model")
@click.option("--message", "-m", "messages", multiple=True, required=True, help="A user message (repeatable).")
@click.option("--system", default=None, help="A client system message, placed first.")
@click.option("--variant", default=None, help="Render this variant instead of a weighted choice.")
@click.option("--user", default=None, help="The request's `user` (decides a sticky variant).")
@click.option("--stream", is_flag=True, help="Render as a streaming request.")
@_config_option
def render(
    model: str,
    messages: tuple[str, ...],
    system: str | None,
    variant: str | None,
    user: str | None,
    stream: bool,
    config_path: Path | None,
) -> None:
    """Print the exact upstream request body for MODEL; nothing is sent upstream."""
    import asyncio

    import orjson

    from gateway.errors import PrefitError
    from gateway.serving.render import render_request
    from gateway.wire import ChatRequest

    resources = ResourceHub()
    config = _load_or_exit(config_path, resources)
    chat_messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text} for text in messages
    ]
    body: dict[str, object] = {"model": model, "messages": chat_messages}
    if stream:
        body["stream"] = True
    if user:
        body["user"] = user
    chat = ChatRequest.model_validate(body)
    policy = config.policies.get(model)
    upstream = config.settings.default_upstream or ""
    if policy is None and not upstream:
        click.echo(f"error: no policy serves {model!r} and there is no default upstream", err=True)
        sys.exit(1)
    try:
        chosen = policy.select(variant, user) if policy is not None else None
        rendered = asyncio.run(render_request(policy, chosen, chat, "render", upstream, config.policies, user))
    except PrefitError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    finally:
        resources.close()
    click.echo(
        f"policy={rendered['policy']} variant={rendered['variant']} prompt_version={rendered['prompt_version']} "
        f"prompt_hash={rendered['prompt_hash']} upstream={rendered['upstream']}",
        err=True,
    )
    if "steps" in rendered:
        for step in rendered["steps"]:
            click.echo(f"# step {step['step']}: model={step['model']} upstream={step['upstream']}", err=True)
        click.echo(orjson.dumps(rendered["steps"], option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(orjson.dumps(rendered["body"], option=orjson.OPT_INDENT_2).decode())


@main.command()
@click.option("--settings", "which", flag_value="settings", help="The settings file's schema instead.")
@click.option("--policy", "which", flag_value="policy", default=True, help="The policy file's schema (default).")
def schema(which: str) -> None:
    """Print the JSON Schema of a policy file (or the settings file), for editors."""
    import orjson

    from gateway.policy import PolicySpec
    from gateway.settings import Settings

    model = Settings if which == "settings" else PolicySpec
    click.echo(orjson.dumps(model.model_json_schema(), option=orjson.OPT_INDENT_2).decode())


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"), show_default=True)
def docs(out: Path) -> None:
    """Regenerate the reference pages and JSON Schemas from the code."""
    from gateway.config.reference import write_reference

    for path in write_reference(out):
        click.echo(f"wrote {path}")


@main.command(name="eval")
@click.argument("policy_name", metavar="POLICY")
@click.option("--dataset", type=click.Path(dir_okay=False, path_type=Path), help="JSONL; default: the policy's.")
@click.option("--variants", default=None, help="Comma-separated variants to run (default: all).")
@click.option("--baseline", default=None, help="Variant the others are compared with (paired, exact McNemar).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the full report.")
@click.option("--url", default=None, help="Evaluate through a running gateway instead of one started here.")
@click.option("--key", default=None, envvar="PREFIT_EVAL_KEY", help="Admin key for --url (PREFIT_EVAL_KEY).")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(1, 100), help="Runs per item.")
@click.option("--no-cache", is_flag=True, help="Call the model again even for unchanged requests.")
@click.option("--save/--no-save", default=True, help="Store the run for history, diff and the console (eval_runs_dir).")
@click.option("--by", "by", multiple=True, help="Slice scores by this item `metadata` field (repeatable).")
@click.option("--concurrency", default=None, type=click.IntRange(1, 64), help="Requests in flight (default: policy).")
@_config_option
def eval_command(
    policy_name: str,
    dataset: Path | None,
    variants: str | None,
    baseline: str | None,
    json_out: Path | None,
    url: str | None,
    key: str | None,
    repeat: int,
    no_cache: bool,
    save: bool,
    by: tuple[str, ...],
    concurrency: int | None,
    config_path: Path | None,
) -> None:
    """Run POLICY's held-out set once per variant, print scores and errors by kind, exit 1 if a gate fails."""
    import asyncio

    from gateway.eval.run import EvalOptions, run_eval

    configure_logging("warning")
    resources = ResourceHub()
    config = _load_or_exit(config_path, resources)
    options = EvalOptions(
        policy=policy_name,
        dataset=dataset,
        variants=variants.split(",") if variants else None,
        baseline=baseline,
        json_out=json_out,
        url=url,
        key=key,
        repeat=repeat,
        use_cache=not no_cache,
        concurrency=concurrency,
        save=save,
        by=by,
    )
    try:
        passed = asyncio.run(run_eval(config, options, resources))
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    finally:
        resources.close()
    sys.exit(0 if passed else 1)


def _runs_folder(config_path: Path | None) -> Path:
    config = _load_or_exit(config_path)
    folder = Path(config.settings.eval_runs_dir)
    return folder if folder.is_absolute() else config.base_dir / folder


def _write_json(path: Path | None, data: object) -> None:
    if path is not None:
        import orjson

        path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))


@main.command()
@click.argument("policy_name", metavar="POLICY")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the rows as JSON.")
@_config_option
def history(policy_name: str, json_out: Path | None, config_path: Path | None) -> None:
    """POLICY's stored eval runs, oldest first: score, interval, change and its paired significance."""
    from rich.console import Console

    from gateway.runs.history import history as build_history
    from gateway.runs.history import history_json, render_history
    from gateway.runs.store import list_runs

    configure_logging("warning")
    rows = build_history(list_runs(_runs_folder(config_path), policy_name))
    render_history(Console(width=None if sys.stdout.isatty() else 200), policy_name, rows)
    _write_json(json_out, history_json(policy_name, rows))


@main.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the flips as JSON.")
@_config_option
def diff(run_a: str, run_b: str, json_out: Path | None, config_path: Path | None) -> None:
    """The items that flipped from RUN_A to RUN_B (run ids from `prefit history`, or run files)."""
    from rich.console import Console

    from gateway.runs.diff import diff_json, diff_runs, render_diff
    from gateway.runs.store import load_run

    configure_logging("warning")
    folder = _runs_folder(config_path)
    try:
        a, b = load_run(run_a, folder), load_run(run_b, folder)
        diffs = diff_runs(a, b)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    render_diff(Console(width=None if sys.stdout.isatty() else 200), a, b, diffs)
    _write_json(json_out, diff_json(a, b, diffs))


@main.command()
@click.argument("policy_name", metavar="POLICY")
@_config_option
def experiments(policy_name: str, config_path: Path | None) -> None:
    """Show POLICY's experiment: each arm's feedback, posterior, chance of being best, and any winner."""
    import asyncio

    from rich.console import Console

    from gateway.serving.experiments import experiment_report, report_table
    from gateway.state.base import StateUnavailable

    configure_logging("warning")
    config = _load_or_exit(config_path)
    try:
        report = asyncio.run(experiment_report(config, policy_name))
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except StateUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    Console(width=None if sys.stdout.isatty() else 160).print(report_table(report))


@main.command()
@click.argument("collection")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--prune", is_flag=True, help="Remove chunks of files that are not among PATHS any more.")
@click.option("--recreate", is_flag=True, help="Drop COLLECTION first and rebuild it (upgrades dense-only to hybrid).")
@_config_option
def ingest(collection: str, paths: tuple[Path, ...], prune: bool, recreate: bool, config_path: Path | None) -> None:
    """Chunk, embed and upsert documents (.md .txt .html .jsonl) into COLLECTION; unchanged files cost nothing."""
    from rich.console import Console

    from gateway.retrieval.embedding import EmbeddingError
    from gateway.retrieval.ingest import IngestError, report_table, upgrade_hint
    from gateway.retrieval.ingest import ingest as run_ingest
    from gateway.retrieval.vectors import VectorStoreError

    hub = ResourceHub()
    _load_or_exit(config_path, hub)
    console = Console(stderr=True)
    try:
        store, embedder = hub.store(), hub.embedder()
        report = run_ingest(store, embedder, collection, list(paths), prune=prune, recreate=recreate, console=console)
    except (IngestError, EmbeddingError, VectorStoreError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        hub.close()
    Console(width=None if sys.stdout.isatty() else 160).print(report_table(report))
    if not report.hybrid:
        click.echo(f"note: {upgrade_hint(collection)}", err=True)
    for file in report.skipped:
        click.echo(f"error: skipped {file.source}: {file.error}", err=True)
    if report.skipped:
        sys.exit(1)


@main.command()
@click.argument("policy_name", metavar="POLICY")
@click.option("--train", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Training JSONL.")
@click.option("--budget", default=200, show_default=True, type=int, help="Upstream calls the search may make.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the split and the restarts.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the report.")
@click.option("--write", is_flag=True, help="Add the winner to the policy file as variant `optimized` (weight 0).")
@click.option("--propose", default=None, metavar="POLICY", help="A policy that proposes system prompt rewrites.")
@_config_option
def optimize(
    policy_name: str,
    train: Path,
    budget: int,
    seed: int,
    json_out: Path | None,
    write: bool,
    propose: str | None,
    config_path: Path | None,
) -> None:
    """Search few-shot examples (and prompts) on a dev split; confirm the best on the held-out set."""
    import asyncio

    import orjson

    from gateway.eval.candidates import policy_path
    from gateway.eval.optimize import OptimizeOptions, Refused, run_optimize
    from gateway.eval.optimize_report import console_for_cli, render_optimize
    from gateway.eval.writeback import write_optimized

    configure_logging("warning")
    settings_file = find_settings_file(config_path)
    config = _load_or_exit(config_path)
    options = OptimizeOptions(policy_name, train, settings_file, budget, seed, propose)
    console = console_for_cli()
    try:
        report = asyncio.run(run_optimize(config, options, console))
    except (Refused, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(f"error: {issue}", err=True)
        sys.exit(2)
    render_optimize(console, report)
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if write and report["winner"] is not None and report["stopped"] is None:
        target = policy_path(config.policies[policy_name])
        try:
            examples = write_optimized(target, report["winner"], settings_file)
        except ConfigError as exc:
            for issue in exc.issues:
                click.echo(f"error: {issue}", err=True)
            sys.exit(1)
        console.print(
            f"wrote variant `optimized` (weight 0) to {target}" + (f", examples in {examples}" if examples else "")
        )
    elif write:
        console.print("[yellow]nothing written[/yellow]: the search did not finish with a confirmed winner")
    sys.exit(1 if report["stopped"] else 0)


@main.command(name="export-finetune")
@click.argument("policy_name", metavar="POLICY")
@click.option("--variant", default=None, help="Variant whose prompt renders the lines (default: the serving one).")
@click.option("--train", type=click.Path(dir_okay=False, path_type=Path), help="JSONL; default: the few-shot examples.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The JSONL to write.")
@_config_option
def export_finetune_command(
    policy_name: str, variant: str | None, train: Path | None, out: Path, config_path: Path | None
) -> None:
    """Write OpenAI chat fine-tuning JSONL rendered through a variant's prompt, held-out items excluded."""
    from gateway.errors import PrefitError
    from gateway.eval.finetune import export_finetune

    resources = ResourceHub()
    config = _load_or_exit(config_path, resources)
    try:
        summary = export_finetune(config, policy_name, variant, train, out, resources)
    except (ValueError, PrefitError, ConfigError) as exc:
        click.echo(f"error: {getattr(exc, 'message', exc)}", err=True)
        sys.exit(2)
    finally:
        resources.close()
    click.echo(
        f"wrote {summary.written} line(s) to {summary.out} from {summary.source} through variant "
        f"{summary.variant!r}; {summary.excluded_heldout} held-out item(s) excluded"
    )


@main.command()
@click.argument("policy_name", metavar="POLICY")
@click.option("--train", type=click.Path(dir_okay=False, path_type=Path), help="Labelled JSONL for the k-sweep.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the advice.")
@_config_option
def advise(policy_name: str, train: Path | None, json_out: Path | None, config_path: Path | None) -> None:
    """Keep prompting, or fine-tune? The format, cost and capability signals, and one verdict."""
    import asyncio

    import orjson

    from gateway.eval.advise import AdviseOptions, render_advice, run_advise
    from gateway.eval.optimize_report import console_for_cli

    configure_logging("warning")
    settings_file = find_settings_file(config_path)
    config = _load_or_exit(config_path)
    console = console_for_cli()
    try:
        advice = asyncio.run(run_advise(config, AdviseOptions(policy_name, settings_file, train), console))
    except (ValueError, ConfigError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    render_advice(console, advice)
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(advice, option=orjson.OPT_INDENT_2))
