"""The command lines, one module per command group.

``daprdockr`` (typer):

* :mod:`.main`      the console script: registers every group below on the app
* :mod:`.app`       the app, global options (etcd endpoints, prefix, TLS and auth), shared plumbing
* :mod:`.svc`       ``svc set/get/del/ls`` (:mod:`.svc.spec`), ``svc history/rollback/status/resume``
  (:mod:`.svc.rollout`)
* :mod:`.node`      ``node drain/undrain``
* :mod:`.cluster`   ``status``, ``nodes``, ``ps``, ``watch``, ``logs``
* :mod:`.agent`     ``agent``, ``dns``
* :mod:`.apply`     ``apply -f FILE|DIR``, ``plan``, ``export``
* :mod:`.version`   ``version`` (also ``--version``): this package's and etcd's, Docker's, nginx's
* :mod:`.progress`  ``--wait`` progress, shared by ``svc set``, ``svc rollback``, ``apply``, ``node drain``

The original tool's ``daprdockrcmd`` / ``daprdockrd`` (Go-style flags): :mod:`.seedcli`.
Importing this package registers nothing, so those two start without typer.
"""
