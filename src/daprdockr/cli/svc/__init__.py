"""``daprdockr svc``: one command group in two modules, registered in this order (``svc --help``'s):

* :mod:`.spec`     ``svc set/get/del/ls``
* :mod:`.rollout`  ``svc history/rollback/status/resume``
"""

from daprdockr.cli.svc import spec  # noqa: F401, I001  (first: its commands come first in svc --help)
from daprdockr.cli.svc import rollout  # noqa: F401
