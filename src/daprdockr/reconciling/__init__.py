"""The parts the reconcile loop (:mod:`daprdockr.reconcile`) is made of, one job each.

* ``ports.py``         what the reconciler uses of etcd, the rollout records and the health
  checks (Protocols), with the stand-ins of a node without them
* ``context.py``       what every part shares: this node, its lease, the ports, the retry table
* ``parts.py``         what the parts need of each other (Protocols)
* ``listing.py``       this node's containers: the cached Docker listing, what is routable, paused
* ``records.py``       writing this node's instance records (read-your-writes)
* ``removal.py``       release before stop: confirmed removal, drain, stop
* ``executor.py``      the actions of one instance key: claim, start, restart, adopt, repair, ...
* ``replacements.py``  rolling updates and takeovers in replacement slots
"""
