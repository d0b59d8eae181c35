"""What every ``prefit`` command shares: the command group, the ``--config`` option, and loading
the configuration (or printing every problem as ``file:line:column`` and exiting 1)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from gateway.config.load import Config, find_settings_file, load_config
from gateway.errors import ConfigError
from gateway.retrieval.resources import ResourceHub

__all__ = ["config_option", "load_or_exit", "main", "runs_folder", "write_json"]


log = logging.getLogger("prefit")


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="PREFIT_CONFIG",
    help="Settings file (default: ./prefit.yaml, else built-in defaults). Env: PREFIT_CONFIG.",
)


def load_or_exit(config_path: Path | None, resources: ResourceHub | None = None) -> Config:
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


@click.group()
@click.version_option(package_name="prefit")
def main() -> None:
    """Prefit: an OpenAI-compatible gateway for prompting, retrieval and decomposition."""


def runs_folder(config_path: Path | None) -> Path:
    config = load_or_exit(config_path)
    folder = Path(config.settings.eval_runs_dir)
    return folder if folder.is_absolute() else config.base_dir / folder


def write_json(path: Path | None, data: object) -> None:
    if path is not None:
        import orjson

        path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
