"""DaprDockr: declaratively described services on a cluster of Docker hosts, coordinated via etcd.

Layout, top to bottom (each layer imports only from the ones below it; enforced by import-linter
contracts in pyproject.toml):

* ``daprdockr.cli``      the ``daprdockr`` command line by command group, and (``cli.seedcli``)
                         the original tool's ``daprdockrcmd`` / ``daprdockrd``.
* ``daprdockr.clikit``   what the command lines share: options, spec files, output, ``logs``.
* ``daprdockr.agent``    the agent: typed components and their order, supervision, heartbeat,
                         HTTP API and metrics; ``daprdockr.dnsworker``: a DNS worker process.
* ``daprdockr.reconcile`` / ``dnsserver`` / ``proxy`` / ``health``  the agent's cooperating
                         tasks: the reconcile loop, the DNS responder, the nginx manager, the
                         health checks (independent of each other).
* ``daprdockr.reconciling`` the reconcile loop's parts: the Docker listing, the action executor,
                         confirmed removal, rolling updates and takeovers.
  ``daprdockr.dnsserving`` the DNS server's parts: sockets, UDP, TCP, clients, answer cache,
                         forwarding, and the pool of DNS worker processes.
* ``daprdockr.adapters`` the outside world: etcd store (aetcd), the informer, Docker runtime
                         (aiodocker), sockets, /proc, the state dir.  Library errors are
                         translated into :mod:`daprdockr.errors` here.
* ``daprdockr.core``     pure logic: model and validation, key schema, state and mirror, planner,
                         DNS zone and wire format (``core.dns``), routing table, restart and retry policies.
                         No I/O, no I/O libraries.
"""

import os

__version__ = "0.1.0"

# gRPC's C core reads these once, when grpc is first imported (by the etcd adapter).  Its own log
# lines (TLS alerts, connection noise) only repeat what the adapter reports as one translated
# error, so they are off unless the operator asks for them by setting GRPC_VERBOSITY.  Its fork
# handlers are off: the agent starts children (DNS workers, `nginx -t`) only to exec them, and the
# handlers did nothing there but log "Other threads are currently calling into gRPC, skipping
# fork() handlers" on every start.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
