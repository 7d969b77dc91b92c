"""The ``daprdockr`` console script (and ``python -m daprdockr``): every command group registered
on the typer app of :mod:`.app`."""

from __future__ import annotations

import logging
import sys

from daprdockr.cli import agent, apply, cert, cluster, node, svc, version  # noqa: F401  (registers the commands)
from daprdockr.cli.app import app
from daprdockr.clikit.output import EXIT_INVALID, error_line
from daprdockr.errors import ValidationError

__all__ = ["app", "main"]


def main() -> None:
    """Console script entry point."""
    try:
        app()
    except ValidationError as exc:
        error_line(str(exc))
        sys.exit(EXIT_INVALID)


logging.getLogger(__name__).addHandler(logging.NullHandler())
