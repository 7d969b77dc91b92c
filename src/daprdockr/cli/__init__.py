"""The ``daprdockr`` command line (typer), one module per command group:

* :mod:`.app`      the app, global options (etcd endpoints, prefix, TLS and auth), shared plumbing
* :mod:`.svc`      ``svc set/get/del/ls``
* :mod:`.rollout`  ``svc history/rollback/status/resume``, ``node drain/undrain``
* :mod:`.cluster`  ``status``, ``nodes``, ``ps``, ``watch``, ``logs``
* :mod:`.agent`    ``agent``, ``dns``
* :mod:`.apply`    ``apply -f FILE|DIR``, ``plan``, ``export``
* :mod:`.version`  ``version`` (also ``--version``): this package's and etcd's, Docker's, nginx's
"""

from __future__ import annotations

import logging
import sys

from daprdockr.cli import agent, apply, cluster, rollout, svc, version  # noqa: F401  (registers the commands)
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
