"""The pure planner, one job per module (no I/O; ``plan.plan_next`` is the entry point).

* ``plan.py``           ``plan_next``: the parts below in order, and the ``Plan`` it returns
* ``observed.py``       what the planner looks at (``Observed``) and asks of it
* ``actions.py``        what it asks for: one action per instance key
* ``per_container.py``  this node's containers: keep, stop, adopt, restart, roll, refresh
* ``claims.py``         keys with no container here: our records to restart or release, claims
* ``placement.py``      the spread rule: fair share and the deal of unowned numbers
* ``takeovers.py``      takeovers from draining nodes, and rebalancing moves (``rebalance.py``)
* ``bad_data.py``       frozen services and malformed keys: nothing stops over bad data
* ``scope.py``          which services a pass must look at
"""
