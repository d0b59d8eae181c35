"""The commands that look at configuration and data without serving: ``check``, ``render``,
``schema``, ``docs`` and ``ingest``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.cli.common import config_option, load_or_exit, main
from gateway.retrieval.resources import ResourceHub

__all__ = ["check", "docs", "ingest", "render", "schema"]


@main.command()
@config_option
def check(config_path: Path | None) -> None:
    """Validate the settings file and every policy; exit 1 listing every error."""
    config = load_or_exit(config_path)
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
@config_option
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
    config = load_or_exit(config_path, resources)
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


@main.command()
@click.argument("collection")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--prune", is_flag=True, help="Remove chunks of files that are not among PATHS any more.")
@click.option("--recreate", is_flag=True, help="Drop COLLECTION first and rebuild it (upgrades dense-only to hybrid).")
@config_option
def ingest(collection: str, paths: tuple[Path, ...], prune: bool, recreate: bool, config_path: Path | None) -> None:
    """Chunk, embed and upsert documents (.md .txt .html .jsonl) into COLLECTION; unchanged files cost nothing."""
    from rich.console import Console

    from gateway.retrieval.embedding import EmbeddingError
    from gateway.retrieval.ingest import IngestError, report_table, upgrade_hint
    from gateway.retrieval.ingest import ingest as run_ingest
    from gateway.retrieval.vectors import VectorStoreError

    hub = ResourceHub()
    load_or_exit(config_path, hub)
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
