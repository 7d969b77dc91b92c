"""DaprDockr: declaratively described services on a cluster of Docker hosts, coordinated via etcd.

Layout (enforced by import-linter contracts in pyproject.toml):

* ``daprdockr.core``     pure logic: model and validation, etcd key schema, placement planner,
                         DNS zone, nginx config rendering, restart policy.  No I/O, no I/O libraries.
* ``daprdockr.adapters`` the outside world: etcd store (aetcd), Docker runtime (aiodocker),
                         DNS socket server (dnslib), nginx process.  Library errors are translated
                         into :mod:`daprdockr.errors` here.
* ``daprdockr.agent``    task supervision and the reconcile loop wiring core and adapters.
* ``daprdockr.cli`` / ``daprdockr.seedcli``  thin command-line front ends.
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
