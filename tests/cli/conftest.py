"""Fixtures shared by the CLI tests."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from daprdockr.cli.main import app


@pytest.fixture
def cli(etcd_endpoints: str, prefix: str):  # type: ignore[no-untyped-def]
    """Invoke ``daprdockr --etcd <test etcd> --prefix <fresh prefix> ARGS`` in-process (CliRunner)."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
        return runner.invoke(app, ["--etcd", etcd_endpoints, "--prefix", prefix, *args], input=input)

    return invoke
