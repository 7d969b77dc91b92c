"""The etcd store (aetcd): reads, transactions, instance claims, node heartbeats, leases and watches
(specs and their versions: :mod:`daprdockr.adapters.versions_store`), one class made of one part
per concern:

* :mod:`~daprdockr.adapters.etcd_pool`: one endpoint at a time, failover to the next on a transient
  error, every call bounded, library errors translated (:mod:`~daprdockr.adapters.etcd_errors`) on
  the channels :mod:`~daprdockr.adapters.etcd_client` opens (TLS, auth, ``hasleader``);
* :mod:`~daprdockr.adapters.etcd_reads`: range reads in pages pinned to one revision;
* :mod:`~daprdockr.adapters.etcd_writes`: puts, transactions and instance claims;
* :mod:`~daprdockr.adapters.etcd_leases`: lease grant, keepalive and revoke;
* :mod:`~daprdockr.adapters.etcd_watch`: the reconnecting watch and key histories.
"""

from __future__ import annotations

from daprdockr.adapters.etcd_leases import EtcdLeases
from daprdockr.adapters.etcd_reads import EtcdReads
from daprdockr.adapters.etcd_watch import EtcdWatch
from daprdockr.adapters.etcd_writes import EtcdWrites


class EtcdStore(EtcdReads, EtcdWrites, EtcdLeases, EtcdWatch):
    """The etcd-backed store.  Use as ``async with EtcdStore(...) as store``."""
