"""The ``daprdockr`` command line: the typer app, its global options and the shared plumbing.

Thin: parse, call the store, an informer or the agent, print.  Exit codes: 0 ok; 2 invalid input;
3 unknown service/instance; 4 etcd unreachable (the message names every endpoint tried); 5
``--wait`` timed out; 6 ``--wait``: the rollout was rolled back or paused; 1 anything else.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.clikit.etcdopts import etcd_security
from daprdockr.clikit.output import error_line, exit_code_for
from daprdockr.core.endpoints import DEFAULT_ETCD, EtcdSecurity, parse_endpoints
from daprdockr.core.keys import DEFAULT_PREFIX, KeySchema
from daprdockr.core.names import ServiceName
from daprdockr.errors import DaprDockrError, ValidationError
from daprdockr.logging_setup import setup_logging

T = TypeVar("T")
ApiOption = Annotated[str | None, typer.Option(
    envvar="DAPRDOCKR_API",
    help="An agent's API (host:port) to read the cluster's rows from [default: an agent on this host; "
         "etcd when none answers].")]
FromEtcdOption = Annotated[bool, typer.Option(
    "--from-etcd", help="Read every key from etcd instead of asking an agent (slower on a large cluster).")]
app = typer.Typer(
    help="DaprDockr: declaratively described services on Docker hosts coordinated through etcd.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
svc_app = typer.Typer(help="Manage service specs (desired state).", no_args_is_help=True)
app.add_typer(svc_app, name="svc")
node_app = typer.Typer(help="Manage nodes: drain and undrain.", no_args_is_help=True)
app.add_typer(node_app, name="node")


@dataclass(frozen=True, slots=True)
class Globals:
    etcd: str
    prefix: str
    timeout: float
    security: EtcdSecurity | None = None


def globals_of(ctx: typer.Context) -> Globals:
    obj = ctx.find_root().obj
    assert isinstance(obj, Globals)
    return obj


def fail(exc: DaprDockrError) -> typer.Exit:
    error_line(str(exc))
    return typer.Exit(exit_code_for(exc))


def with_store(ctx: typer.Context, fn: Callable[[EtcdStore], Awaitable[T]]) -> T:
    """Run ``fn(store)`` on a connected store; DaprDockr errors become one line + exit code."""
    g = globals_of(ctx)

    async def main() -> T:
        store = store_of(g)
        try:
            await store.connect()
            return await fn(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except DaprDockrError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def service_name(text: str) -> ServiceName:
    try:
        return ServiceName.parse(text, field="service name")
    except ValidationError as exc:
        raise fail(exc) from None


@app.callback(invoke_without_command=True)
def main_options(
    ctx: typer.Context,
    etcd: Annotated[str, typer.Option(envvar="DAPRDOCKR_ETCD", help="etcd endpoints, comma separated.")] = DEFAULT_ETCD,
    prefix: Annotated[str, typer.Option(envvar="DAPRDOCKR_PREFIX", help="etcd key prefix.")] = DEFAULT_PREFIX,
    timeout: Annotated[float, typer.Option(help="Seconds per etcd call and endpoint.")] = 2.0,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="-v info, -vv debug.")] = 0,
    log_format: Annotated[str, typer.Option(help="Log format: text or json.")] = "text",
    etcd_cacert: Annotated[Path | None, typer.Option(
        envvar="DAPRDOCKR_ETCD_CACERT", help="CA (PEM) to verify https:// etcd endpoints.")] = None,
    etcd_cert: Annotated[Path | None, typer.Option(
        envvar="DAPRDOCKR_ETCD_CERT", help="Client certificate (PEM) for etcd.")] = None,
    etcd_key: Annotated[Path | None, typer.Option(envvar="DAPRDOCKR_ETCD_KEY", help="Client key (PEM).")] = None,
    etcd_user: Annotated[str | None, typer.Option(envvar="DAPRDOCKR_ETCD_USER", help="etcd user (auth).")] = None,
    etcd_password_file: Annotated[Path | None, typer.Option(
        envvar="DAPRDOCKR_ETCD_PASSWORD_FILE",
        help="File with the etcd user's password (or set DAPRDOCKR_ETCD_PASSWORD).")] = None,
    show_version: Annotated[bool, typer.Option(
        "--version", help="Print the version report (as `daprdockr version`) and exit.")] = False,
) -> None:
    """Global options (also from DAPRDOCKR_ETCD / DAPRDOCKR_PREFIX and DAPRDOCKR_ETCD_*)."""
    try:
        parse_endpoints(etcd)
        KeySchema(prefix)
        if log_format not in ("text", "json"):
            raise ValidationError(f"{log_format!r} is not text or json", field="--log-format")
        security = etcd_security(cacert=etcd_cacert, cert=etcd_cert, key=etcd_key, user=etcd_user,
                                 password_file=etcd_password_file)
    except ValidationError as exc:
        raise fail(exc) from None
    setup_logging(verbosity=verbose, fmt=log_format)
    ctx.obj = Globals(etcd=etcd, prefix=prefix, timeout=timeout, security=security)
    if show_version:
        from daprdockr.cli.version import show_versions  # (that module imports this one)

        show_versions(ctx.obj)
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:  # options but no command: as click says without invoke_without_command
        ctx.fail("Missing command.")


# ---------------------------------------------------------------------------------------- svc

def store_of(g: Globals) -> EtcdStore:
    return EtcdStore(endpoints=parse_endpoints(g.etcd), schema=KeySchema(g.prefix), timeout=g.timeout,
                     security=g.security)
