"""``python -m gateway`` runs the ``prefit`` command."""

from gateway.cli import main

main()
