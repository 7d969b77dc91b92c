"""Seed-compatible commands: ``daprdockrcmd`` and ``daprdockrd`` with the original Go-style flags.

The original tool used Go's ``flag`` package: single or double dash, ``-flag=value`` or
``-flag value``, booleans as ``-set`` or ``-set=true``.  argparse handles the long single-dash
options once they are declared with one dash.  ``-cmd`` was one string in the seed; it is split
with :func:`shlex.split` into the argument list (the only place a string becomes arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.statedir import prepare_state_dir
from daprdockr.clikit.etcdopts import etcd_security
from daprdockr.clikit.output import error_line, exit_code_for
from daprdockr.clikit.specfile import merge_flags, merge_onto, parse_spec_text
from daprdockr.core.endpoints import SEED_DEFAULT_ETCD, EtcdSecurity, parse_endpoints
from daprdockr.core.keys import DEFAULT_PREFIX, KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.errors import DaprDockrError, NotFoundError, ValidationError
from daprdockr.logging_setup import setup_logging

GO_BOOL = {"true": True, "1": True, "t": True, "false": False, "0": False, "f": False}


def _go_style(argv: Sequence[str], booleans: set[str]) -> list[str]:
    """``--flag`` -> ``-flag``; ``-bool=true/false`` -> ``-bool`` / dropped (Go flag semantics)."""
    out: list[str] = []
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            arg = arg[1:]
        name, sep, value = arg.partition("=")
        if sep and name.lstrip("-") in booleans:
            if value.lower() not in GO_BOOL:
                raise ValidationError(f"invalid boolean value {value!r} for {name}")
            if GO_BOOL[value.lower()]:
                out.append(name)
            continue
        out.append(arg)
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise ValidationError(message)


def _add_etcd_security(p: _Parser) -> None:
    """TLS and auth for etcd; the password comes from a file or DAPRDOCKR_ETCD_PASSWORD, never a flag."""
    p.add_argument("-etcd-cacert", dest="etcd_cacert", help="CA (PEM) for https:// endpoints")
    p.add_argument("-etcd-cert", dest="etcd_cert", help="client certificate (PEM)")
    p.add_argument("-etcd-key", dest="etcd_key", help="client key (PEM)")
    p.add_argument("-etcd-user", dest="etcd_user", help="etcd user")
    p.add_argument("-etcd-password-file", dest="etcd_password_file", help="file with the etcd user's password")


def _security(args: argparse.Namespace) -> EtcdSecurity | None:
    return etcd_security(cacert=args.etcd_cacert, cert=args.etcd_cert, key=args.etcd_key, user=args.etcd_user,
                         password_file=args.etcd_password_file)


def _cmd_parser() -> _Parser:
    p = _Parser(prog="daprdockrcmd", description="Seed-compatible DaprDockr control command.",
                prefix_chars="-", allow_abbrev=False)
    p.add_argument("-svc", required=True, help="service name, <service>.<group>")
    p.add_argument("-set", action="store_true", help="create or update the service")
    p.add_argument("-get", action="store_true", help="print the service spec as JSON")
    p.add_argument("-del", action="store_true", dest="delete", help="delete the service")
    p.add_argument("-stdin", action="store_true", help="read the JSON spec for -set from stdin")
    p.add_argument("-image", help="Docker image")
    p.add_argument("-instances", type=int, help="number of instances")
    p.add_argument("-cmd", help="command line (split like a shell would, no shell is run)")
    p.add_argument("-http-host", dest="http_host", help="HTTP hostname")
    p.add_argument("-http-port", dest="http_port", type=int, help="container HTTP port")
    p.add_argument("-etcd", default=SEED_DEFAULT_ETCD, help="etcd endpoints, comma separated")
    p.add_argument("-prefix", default=DEFAULT_PREFIX, help=argparse.SUPPRESS)
    p.add_argument("-v", action="store_true", help="verbose")
    _add_etcd_security(p)
    return p


async def _cmd(args: argparse.Namespace, stdin_text: str | None) -> int:
    name = ServiceName.parse(args.svc, field="svc")
    actions = [args.set, args.get, args.delete]
    if sum(actions) != 1:
        raise ValidationError("give exactly one of -set, -get, -del")
    store = EtcdStore(endpoints=parse_endpoints(args.etcd), schema=KeySchema(args.prefix), timeout=2.0,
                      security=_security(args))
    try:
        await store.connect()
        if args.get:
            spec = await store.get_service(name)
            if spec is None:
                raise NotFoundError(f"service {name} not found")
            print(json.dumps(spec.to_dict(), indent=2, sort_keys=True))
        elif args.delete:
            if not await store.delete_service(name):
                raise NotFoundError(f"service {name} not found")
        else:
            flags = {
                "image": args.image, "instances": args.instances,
                "cmd": shlex.split(args.cmd) if args.cmd is not None else None,
                "http_host": args.http_host, "http_port": args.http_port,
            }
            if stdin_text is not None:  # a whole spec from stdin replaces the stored one
                (doc,) = parse_spec_text(stdin_text, source="<stdin>")[:1]
                spec = ServiceSpec.from_dict(merge_flags(doc, flags), name=name)
                await store.put_service(spec)
            else:  # flags merged onto the stored spec, as one transaction
                spec = await store.update_service(name, lambda cur, bad: merge_onto(name, cur, bad, flags))
            if args.v:
                print(json.dumps(spec.to_dict(), sort_keys=True), file=sys.stderr)
        return 0
    finally:
        await store.close()


def daprdockrcmd_main(argv: Sequence[str] | None = None) -> int:
    """``daprdockrcmd -svc web.myapp -set -image busybox -instances 3 -etcd=http://...``"""
    try:
        args = _cmd_parser().parse_args(_go_style(sys.argv[1:] if argv is None else argv,
                                                  {"set", "get", "del", "stdin", "v"}))
        setup_logging(verbosity=1 if args.v else 0)
        stdin_text = sys.stdin.read() if args.stdin else None
        if args.stdin and not args.set:
            raise ValidationError("-stdin needs -set")
        return asyncio.run(_cmd(args, stdin_text))
    except DaprDockrError as exc:
        error_line(str(exc))
        return exit_code_for(exc)


def _d_parser() -> _Parser:
    p = _Parser(prog="daprdockrd", description="Seed-compatible DaprDockr agent daemon.", allow_abbrev=False)
    p.add_argument("-docker", default=None, help="Docker engine URL (default: local socket)")
    p.add_argument("-etcd", default=SEED_DEFAULT_ETCD, help="etcd endpoints, comma separated")
    p.add_argument("-cpuprofile", default=None, help="write a cProfile profile here on exit")
    p.add_argument("-node-id", dest="node_id", default=None, help="node id (default: hostname)")
    p.add_argument("-advertise-ip", dest="advertise_ip", default="127.0.0.1", help="address to publish ports on")
    p.add_argument("-prefix", default=DEFAULT_PREFIX, help="etcd key prefix")
    p.add_argument("-dns-listen", dest="dns_listen", default="127.0.0.1:53", help="DNS ADDR:PORT or off")
    p.add_argument("-http-listen", dest="http_listen", default="0.0.0.0:80", help="nginx ADDR:PORT or off")
    p.add_argument("-api-listen", dest="api_listen", default="127.0.0.1:7400", help="API ADDR:PORT or off")
    p.add_argument("-ttl", type=int, default=5, help="lease TTL seconds")
    p.add_argument("-v", action="store_true", help="verbose")
    _add_etcd_security(p)
    return p


def daprdockrd_main(argv: Sequence[str] | None = None) -> int:
    """``daprdockrd -etcd http://... -docker unix:///var/run/docker.sock [-cpuprofile FILE]``"""

    from daprdockr.agent.main import run_agent
    from daprdockr.clikit.agentconfig import build_agent_config

    try:
        args = _d_parser().parse_args(_go_style(sys.argv[1:] if argv is None else argv, {"v"}))
        config = build_agent_config(
            etcd=args.etcd, prefix=args.prefix, node_id=args.node_id, advertise_ip=args.advertise_ip,
            ttl=args.ttl, capacity=0, docker=args.docker, state_dir=None,
            dns_listen=args.dns_listen, dns_upstream=None, dns_ttl=5, http_listen=args.http_listen,
            nginx="nginx", api_listen=args.api_listen, keep_on_exit=False,
            dns_workers=-1,  # auto, as for `daprdockr agent`
            security=_security(args),
        )
        prepare_state_dir(config.state_dir)
    except DaprDockrError as exc:
        error_line(str(exc))
        return exit_code_for(exc)
    setup_logging(verbosity=2 if args.v else 1)
    if not args.cpuprofile:
        return run_agent(config)
    import cProfile

    profiler = cProfile.Profile()
    try:
        return int(profiler.runcall(run_agent, config))
    finally:
        profiler.dump_stats(args.cpuprofile)
        logging.getLogger(__name__).info("CPU profile written to %s", args.cpuprofile)
