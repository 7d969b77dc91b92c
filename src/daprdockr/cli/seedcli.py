"""The original DaprDockr's commands: ``daprdockrcmd`` and ``daprdockrd``, with its Go-style flags.

Scripts written for the original keep working: the flags, their defaults and the ``-help``
layout are the original's (:mod:`daprdockr.clikit.goflags`; usage on stderr, as Go's ``flag``
prints it), with DaprDockr's additions beside them.  ``daprdockrcmd``: ``-get`` is the default
action, ``-set`` wins over ``-del``, ``-ip`` prints the host's IP (from the route table) without
touching etcd, ``-format seed`` prints the original's shape.  ``-stdin`` reads one spec, in
DaprDockr's JSON or the original's: as in the original it names the service (``-svc`` may be left
out; given and different, it is an error), ``-set`` writes it whole, ``-get``/``-del`` act on the
service it names.  ``-cmd`` (one string in the original) is split with :func:`shlex.split`, never
run by a shell.  ``-set`` merges the given flags onto the stored spec (the original replaced it,
turning every unset flag into a zero value: ``-set -instances 5`` would have erased the image) and
prints the stored spec; a new service starts from the original's zero values, so without
``-instances`` it has 0 instances (said on stderr).
``daprdockrd``: ``-etcd``/``ETCD_HOSTS``, ``-docker``/``DOCKER_SOCK`` (a URL or a bare socket
path), ``-host``/``HOST_IP`` (the advertise address; detected from ``-route`` when empty),
``-cpuprofile`` (a Python cProfile file, read with ``python -m pstats``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.hostip import DEFAULT_ROUTE_FILE, detect_host_ip
from daprdockr.adapters.statedir import prepare_state_dir
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.clikit.etcdopts import etcd_security
from daprdockr.clikit.goflags import Flag, HelpRequested, Parsed, parse, usage
from daprdockr.clikit.output import error_line, exit_code_for
from daprdockr.clikit.specfile import merge_flags, merge_onto, parse_spec_text
from daprdockr.core.endpoints import SEED_DEFAULT_ETCD, EtcdSecurity, parse_endpoints
from daprdockr.core.keys import DEFAULT_PREFIX, KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.seedformat import marshal_indent, to_seed
from daprdockr.errors import DaprDockrError, NotFoundError, ValidationError
from daprdockr.logging_setup import setup_logging

if TYPE_CHECKING:
    from daprdockr.agent.config import AgentConfig

ETCD_SECURITY = [
    Flag("etcd-cacert", "string", "CA (PEM) to verify https:// etcd endpoints."),
    Flag("etcd-cert", "string", "Client certificate (PEM) for etcd."),
    Flag("etcd-key", "string", "Client key (PEM) for etcd."),
    Flag("etcd-user", "string", "etcd user (the password from -etcd-password-file or DAPRDOCKR_ETCD_PASSWORD)."),
    Flag("etcd-password-file", "string", "File with the etcd user's password."),
]
ETCD = Flag("etcd", "string", "Comma separated list of URLs of the cluster's etcd.", SEED_DEFAULT_ETCD)
PREFIX = Flag("prefix", "string", "etcd key prefix.", DEFAULT_PREFIX)
ROUTE = Flag("route", "string", "Route table used to detect this host's IP.", str(DEFAULT_ROUTE_FILE))

CMD_FLAGS = [
    Flag("cmd", "string", "The command to run in the container."),
    Flag("del", "bool", "Delete service configuration.", False),
    ETCD,
    Flag("get", "bool", "Get service configuration.", True),
    Flag("http-host", "string", "The HTTP hostname used for load balancing this service."),
    Flag("http-port", "string", "The HTTP port within the container for load balancing."),
    Flag("image", "string", "The service image in the form accepted by docker."),
    Flag("instances", "int", "The target number of service instances.", 0),
    Flag("set", "bool", "Set service configuration.", False),
    Flag("stdin", "bool", "Read JSON service definition from stdin.", False),
    Flag("svc", "string", 'The service to operate on, in the form "<service>.<group>".'),
    Flag("v", "bool", "Provide verbose output.", False),
    Flag("ip", "bool", "Print this host's IP address (from the route table) and exit.", False),
    ROUTE,
    PREFIX,
    Flag("format", "string", "Output of -get and -set: json (DaprDockr's spec) or seed (the original's shape).",
         "json"),
    Flag("user", "string", "Run as <user>[:<group>]."),
    Flag("workdir", "string", "Working directory in the container."),
    Flag("entrypoint", "string", "The entrypoint (split like -cmd)."),
    Flag("hostname", "string", "Container host name (default <n>.<service>.<group>)."),
    Flag("memory", "string", "Memory limit: bytes or like 512m."),
    Flag("cpus", "string", "CPU limit, e.g. 0.5."),
    Flag("cpu-shares", "int", "Relative CPU weight.", 0),
    Flag("pids-limit", "int", "Most processes in the container.", 0),
    Flag("volume", "list", "A volume: /path, name:/path or /host/path:/path[:ro] (repeatable)."),
    Flag("network", "string", "Network mode: bridge, host or none."),
    *ETCD_SECURITY,
]


def _security(p: Parsed) -> EtcdSecurity | None:
    def path(name: str) -> Path | None:
        return Path(p.text(name)) if p.text(name) else None

    return etcd_security(cacert=path("etcd-cacert"), cert=path("etcd-cert"), key=path("etcd-key"),
                         user=p.text("etcd-user") or None, password_file=path("etcd-password-file"))


def _service(text: str) -> ServiceName:
    if text.count(".") != 1:
        raise ValidationError(f"{text!r} must be <service>.<group> with exactly one dot, e.g. web.myapp",
                              field="-svc")
    return ServiceName.parse(text, field="-svc")


def _target(svc: str, doc: Mapping[str, Any] | None) -> ServiceName:
    """The service to act on: ``-svc``, or (as the original with ``-stdin``) the document's name;
    both given and different is an error rather than a guess."""
    given = _service(svc) if svc else None
    raw = doc.get("name") if doc is not None else None
    named = ServiceName.parse(raw, field="name") if raw not in (None, "") else None
    if given is not None and named is not None and given != named:
        raise ValidationError(f"-svc names {given} but the document on stdin names {named}", field="-svc")
    name = given or named
    if name is None:
        where = " (or Name and Group in the document on stdin)" if doc is not None else ""
        raise ValidationError(f"give the service: -svc <service>.<group>{where}", field="-svc")
    return name


def _stdin_doc(text: str, *, warn: bool) -> dict[str, Any]:
    """The one service definition on stdin (ours or the original's, converted)."""
    ignored: list[str] = []
    docs = parse_spec_text(text, source="<stdin>", ignored=ignored)
    if len(docs) != 1:
        raise ValidationError("-stdin takes one service definition")
    if ignored and warn:
        print(f"daprdockrcmd: ignoring fields DaprDockr does not manage: {', '.join(ignored)}", file=sys.stderr)
    return docs[0]


def _set_flags(p: Parsed) -> dict[str, Any]:
    """The spec fields given on the command line (the rest stay as stored)."""
    given = p.given
    flags: dict[str, Any] = {}
    for flag, field in (("image", "image"), ("http-host", "http_host"), ("user", "user"), ("workdir", "workdir"),
                        ("hostname", "hostname"), ("memory", "memory"), ("network", "network")):
        if flag in given:
            flags[field] = p.text(flag)
    for flag, field in (("instances", "instances"), ("cpu-shares", "cpu_shares"), ("pids-limit", "pids_limit")):
        if flag in given:
            flags[field] = p.number(flag)
    if "cmd" in given:
        flags["cmd"] = shlex.split(p.text("cmd"))
    if "entrypoint" in given:
        flags["entrypoint"] = shlex.split(p.text("entrypoint"))
    if "http-port" in given:
        port = p.text("http-port").strip()
        if port and not port.isdigit():
            raise ValidationError(f"{port!r} is not a port number", field="-http-port")
        flags["http_port"] = int(port) if port else None
    if "cpus" in given:
        try:
            flags["cpus"] = float(p.text("cpus"))
        except ValueError:
            raise ValidationError(f"{p.text('cpus')!r} is not a number", field="-cpus") from None
    if "volume" in given:
        flags["volumes"] = p.items("volume")
    return flags


def _show(spec: ServiceSpec, fmt: str) -> str:
    if fmt == "seed":
        return marshal_indent(to_seed(spec))
    return json.dumps(spec.to_dict(), indent=2, sort_keys=True)


async def _cmd(p: Parsed, stdin_text: str | None) -> int:
    fmt = p.text("format")
    if fmt not in ("json", "seed"):
        raise ValidationError(f"{fmt!r} is not json or seed", field="-format")
    action = "set" if p.on("set") else "del" if p.on("del") else "get" if p.on("get") else ""
    if not action:
        return 0  # -get=false and nothing else: the original did nothing either
    # -stdin: the document names the service (as in the original) and, with -set, is the spec
    doc = _stdin_doc(stdin_text, warn=action == "set") if stdin_text is not None else None
    name = _target(p.text("svc"), doc)
    store = EtcdStore(endpoints=parse_endpoints(p.text("etcd")), schema=KeySchema(p.text("prefix")), timeout=2.0,
                      security=_security(p))
    try:
        await store.connect()
        versions = VersionStore(store)
        if action == "get":
            spec = await versions.get_service(name)
            if spec is None:
                raise NotFoundError(f"service {name} not found")
            print(_show(spec, fmt))
        elif action == "del":
            if not await versions.delete_service(name):
                raise NotFoundError(f"service {name} not found")
        else:
            flags = _set_flags(p)
            if doc is not None:  # a whole spec from stdin replaces the stored one
                spec = ServiceSpec.from_dict(merge_flags(doc, flags), name=name)
                await versions.put_service(spec)
            else:  # flags merged onto the stored spec, as one transaction; a new service starts
                # from the original's zero values: no -instances, no instances
                new = {"instances": 0, **flags}
                spec = await versions.update_service(
                    name, lambda cur, bad: merge_onto(name, cur, bad, flags if cur is not None else new))
            if spec.instances == 0 and "instances" not in p.given:
                print(f"daprdockrcmd: {name} has 0 instances (give -instances N to run it)", file=sys.stderr)
            print(_show(spec, fmt))
        return 0
    finally:
        await store.close()


def _parse(prog: str, flags: Sequence[Flag], argv: Sequence[str] | None,
           environ: Mapping[str, str] | None = None) -> Parsed | int:
    """Parsed flags, or an exit code once the usage or an error was printed."""
    env = os.environ if environ is None else environ
    try:
        p = parse(sys.argv[1:] if argv is None else argv, flags, environ=env)
    except HelpRequested:  # on stderr, as Go's flag package prints it
        print(usage(prog, flags, environ=env), end="", file=sys.stderr)
        return 0
    except ValidationError as exc:
        error_line(str(exc))
        print(f"run '{prog} -help' for the flags", file=sys.stderr)
        return exit_code_for(exc)
    if p.args:
        error_line(f"unexpected argument {p.args[0]!r} (flags only; run '{prog} -help')")
        return 2
    return p


def daprdockrcmd_main(argv: Sequence[str] | None = None) -> int:
    """``daprdockrcmd -svc web.myapp -set -image busybox -instances 3 -etcd=http://...``"""
    p = _parse("daprdockrcmd", CMD_FLAGS, argv)
    if isinstance(p, int):
        return p
    try:
        if p.on("ip"):
            print(detect_host_ip(Path(p.text("route"))))
            return 0
        setup_logging(verbosity=1 if p.on("v") else 0)
        stdin_text = sys.stdin.read() if p.on("stdin") else None
        return asyncio.run(_cmd(p, stdin_text))
    except DaprDockrError as exc:
        error_line(str(exc))
        return exit_code_for(exc)


D_FLAGS = [
    Flag("cpuprofile", "string", "write cpu profile to file"),
    Flag("docker", "string", "URLs of the local docker instance.", "unix:///var/run/docker.sock", env="DOCKER_SOCK"),
    Flag("etcd", "string", ETCD.usage, SEED_DEFAULT_ETCD, env="ETCD_HOSTS"),
    Flag("host", "string", "This host's IP address: ports are published and DNS answers on it; detected from "
         "-route when empty.", env="HOST_IP"),
    ROUTE,
    PREFIX,
    Flag("node-id", "string", "Node id (default: the host name)."),
    Flag("dns-listen", "string", "DNS ADDR:PORT or off; auto: port 53 of -host (and 127.0.0.1:53).", "auto"),
    Flag("http-listen", "string", "nginx ADDR:PORT or off.", "0.0.0.0:80"),
    Flag("api-listen", "string", "Agent HTTP API ADDR:PORT or off.", "127.0.0.1:7400"),
    Flag("ttl", "int", "Lease TTL in seconds.", 5),
    Flag("allow-bind", "list", "Host path containers may bind-mount (repeatable)."),
    Flag("drain-on-shutdown", "bool", "On SIGTERM, move every instance to other nodes first.", False),
    Flag("v", "bool", "Provide verbose output.", False),
    *ETCD_SECURITY,
]


def _docker_url(value: str) -> str | None:
    """``-docker``/``DOCKER_SOCK``: a URL, or a bare socket path as the original image passed it."""
    if not value:
        return None
    return f"unix://{value}" if value.startswith("/") else value


def daprdockrd_config(p: Parsed) -> AgentConfig:
    """The agent configuration of ``daprdockrd``'s flags (and their environment variables)."""
    from daprdockr.clikit.agentconfig import build_agent_config

    return build_agent_config(
        etcd=p.text("etcd"), prefix=p.text("prefix"), node_id=p.text("node-id") or None,
        advertise_ip=p.text("host") or "auto", route_file=Path(p.text("route")), ttl=p.number("ttl"),
        capacity=0, docker=_docker_url(p.text("docker")), state_dir=None, dns_listen=p.text("dns-listen"),
        dns_upstream=None, dns_ttl=5, http_listen=p.text("http-listen"), nginx="nginx",
        api_listen=p.text("api-listen"), keep_on_exit=False, dns_workers=-1, security=_security(p),
        allow_bind=p.items("allow-bind"), drain_on_shutdown=p.on("drain-on-shutdown"),
    )


def daprdockrd_main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """``daprdockrd -etcd http://... -docker unix:///var/run/docker.sock [-host IP] [-cpuprofile FILE]``"""

    from daprdockr.agent.main import run_agent

    p = _parse("daprdockrd", D_FLAGS, argv, environ)
    if isinstance(p, int):
        return p
    try:
        config = daprdockrd_config(p)
        prepare_state_dir(config.state_dir)
    except DaprDockrError as exc:
        error_line(str(exc))
        return exit_code_for(exc)
    setup_logging(verbosity=2 if p.on("v") else 1)
    if not p.text("cpuprofile"):
        return run_agent(config)
    import cProfile

    profiler = cProfile.Profile()
    try:
        return int(profiler.runcall(run_agent, config))
    finally:
        profiler.dump_stats(p.text("cpuprofile"))
        logging.getLogger(__name__).info("CPU profile written to %s", p.text("cpuprofile"))
