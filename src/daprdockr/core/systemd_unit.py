"""The systemd unit of the agent (``daprdockr agent install``), rendered from its command line.

Modelled on Nomad's and Consul's units: ``Type=notify`` (the agent says ``READY=1`` once it is
registered in etcd and serves DNS and HTTP, :mod:`daprdockr.adapters.sdnotify`), a watchdog the
agent's own event loop feeds, ``Restart=on-failure``, a high ``LimitNOFILE``.  ``KillMode=process``
as theirs: SIGTERM goes to the agent alone, which drains, releases its instances and stops its
nginx and DNS worker processes itself (with ``--keep-on-exit`` it leaves nginx serving for the next
start to adopt; the nginx orphan guard ends it otherwise).  ``TimeoutStopSec`` outlasts the
agent's own shutdown bounds, so systemd never kills a drain the agent would finish.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

UNIT_NAME = "daprdockr-agent.service"
DEFAULT_CONFIG = "/etc/daprdockr/agent.toml"
DEFAULT_UNIT_DIR = "/etc/systemd/system"
ENV_FILE = "/etc/daprdockr/agent.env"
WATCHDOG_SEC = 30
LIMIT_NOFILE = 65536
STOP_MARGIN = 30.0  # beyond the drain and the release: stopping the components and closing the clients


def stop_timeout(*, drain_deadline: float, release_timeout: float) -> int:
    """Seconds systemd waits after SIGTERM: a full drain (--drain-on-shutdown), then the release of
    the instances (bounded by the agent's shutdown timeout), then the components, with margin."""
    return math.ceil(drain_deadline + release_timeout + STOP_MARGIN)


def exec_line(argv: Sequence[str]) -> str:
    """``argv`` as one ``ExecStart=`` value: each word quoted when it needs to be, ``%`` and ``$``
    escaped (systemd would expand them as specifiers and variables)."""
    if not argv or not argv[0].startswith("/"):
        raise ValueError("ExecStart needs an absolute executable path")
    return " ".join(_word(a) for a in argv)


def _word(arg: str) -> str:
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and not any(c.isspace() or c in "\"'\\;" for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def render_unit(
    *, argv: Sequence[str], drain_deadline: float, release_timeout: float,
    watchdog_sec: int = WATCHDOG_SEC, limit_nofile: int = LIMIT_NOFILE,
) -> str:
    """The text of ``daprdockr-agent.service`` running ``argv``."""
    return f"""\
[Unit]
Description=DaprDockr agent
Wants=network-online.target
After=network-online.target docker.service

[Service]
Type=notify
NotifyAccess=main
EnvironmentFile=-{ENV_FILE}
ExecStart={exec_line(argv)}
KillMode=process
KillSignal=SIGTERM
Restart=on-failure
RestartSec=2
TimeoutStopSec={stop_timeout(drain_deadline=drain_deadline, release_timeout=release_timeout)}
WatchdogSec={watchdog_sec}
LimitNOFILE={limit_nofile}
TasksMax=infinity

[Install]
WantedBy=multi-user.target
"""
