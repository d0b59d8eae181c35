"""The ``prefit`` command: a thin layer mapping flags onto settings, as uvicorn's CLI does.

``common`` holds the command group; each other module adds its commands to it when imported.
"""

from gateway.cli import configuration, evals, serve
from gateway.cli.common import main

__all__ = ["configuration", "evals", "main", "serve"]
