"""The iteration loop from the command line: ``eval``, ``history``, ``diff``, ``experiments``,
``optimize``, ``advise`` and ``export-finetune``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.cli.common import config_option, load_or_exit, main, runs_folder, write_json
from gateway.config.load import find_settings_file
from gateway.errors import ConfigError
from gateway.logs import configure_logging
from gateway.retrieval.resources import ResourceHub

__all__ = ["advise", "diff", "eval_command", "experiments", "export_finetune_command", "history", "optimize"]


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
@config_option
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
    config = load_or_exit(config_path, resources)
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


@main.command()
@click.argument("policy_name", metavar="POLICY")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the rows as JSON.")
@config_option
def history(policy_name: str, json_out: Path | None, config_path: Path | None) -> None:
    """POLICY's stored eval runs, oldest first: score, interval, change and its paired significance."""
    from rich.console import Console

    from gateway.runs.history import history as build_history
    from gateway.runs.history import history_json, render_history
    from gateway.runs.store import list_runs

    configure_logging("warning")
    rows = build_history(list_runs(runs_folder(config_path), policy_name))
    render_history(Console(width=None if sys.stdout.isatty() else 200), policy_name, rows)
    write_json(json_out, history_json(policy_name, rows))


@main.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the flips as JSON.")
@config_option
def diff(run_a: str, run_b: str, json_out: Path | None, config_path: Path | None) -> None:
    """The items that flipped from RUN_A to RUN_B (run ids from `prefit history`, or run files)."""
    from rich.console import Console

    from gateway.runs.diff import diff_json, diff_runs, render_diff
    from gateway.runs.store import load_run

    configure_logging("warning")
    folder = runs_folder(config_path)
    try:
        a, b = load_run(run_a, folder), load_run(run_b, folder)
        diffs = diff_runs(a, b)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    render_diff(Console(width=None if sys.stdout.isatty() else 200), a, b, diffs)
    write_json(json_out, diff_json(a, b, diffs))


@main.command()
@click.argument("policy_name", metavar="POLICY")
@config_option
def experiments(policy_name: str, config_path: Path | None) -> None:
    """Show POLICY's experiment: each arm's feedback, posterior, chance of being best, and any winner."""
    import asyncio

    from rich.console import Console

    from gateway.serving.experiments import experiment_report, report_table
    from gateway.state.base import StateUnavailable

    configure_logging("warning")
    config = load_or_exit(config_path)
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
@click.argument("policy_name", metavar="POLICY")
@click.option("--train", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Training JSONL.")
@click.option("--budget", default=200, show_default=True, type=int, help="Upstream calls the search may make.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the split and the restarts.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the report.")
@click.option("--write", is_flag=True, help="Add the winner to the policy file as variant `optimized` (weight 0).")
@click.option("--propose", default=None, metavar="POLICY", help="A policy that proposes system prompt rewrites.")
@config_option
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
    config = load_or_exit(config_path)
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
@config_option
def export_finetune_command(
    policy_name: str, variant: str | None, train: Path | None, out: Path, config_path: Path | None
) -> None:
    """Write OpenAI chat fine-tuning JSONL rendered through a variant's prompt, held-out items excluded."""
    from gateway.errors import PrefitError
    from gateway.eval.finetune import export_finetune

    resources = ResourceHub()
    config = load_or_exit(config_path, resources)
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
@config_option
def advise(policy_name: str, train: Path | None, json_out: Path | None, config_path: Path | None) -> None:
    """Keep prompting, or fine-tune? The format, cost and capability signals, and one verdict."""
    import asyncio

    import orjson

    from gateway.eval.advise import AdviseOptions, render_advice, run_advise
    from gateway.eval.optimize_report import console_for_cli

    configure_logging("warning")
    settings_file = find_settings_file(config_path)
    config = load_or_exit(config_path)
    console = console_for_cli()
    try:
        advice = asyncio.run(run_advise(config, AdviseOptions(policy_name, settings_file, train), console))
    except (ValueError, ConfigError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    render_advice(console, advice)
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(advice, option=orjson.OPT_INDENT_2))
