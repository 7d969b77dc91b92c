"""``daprdockr agent install`` / ``uninstall``: the agent's systemd unit on this host.

The unit (:mod:`daprdockr.core.systemd_unit`) runs this very ``daprdockr`` executable (its
absolute path) with ``agent --config FILE``; the file is read first, so a unit is never written
for a file the agent would refuse, and its ``drain_deadline`` sets how long systemd waits at stop.
systemctl is not run: the commands to run are printed (the unit directory may be a staging one).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from daprdockr.agent.config import AgentConfig
from daprdockr.clikit.agentfile import read_agent_file
from daprdockr.core.agentfile import OptionDef
from daprdockr.core.systemd_unit import UNIT_NAME, render_unit
from daprdockr.errors import ValidationError


def daprdockr_executable() -> str:
    """The absolute path of the ``daprdockr`` script running now, else the one beside this Python."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "daprdockr" and argv0.is_file():
        return os.path.abspath(argv0)
    beside = Path(sys.executable).parent / "daprdockr"
    if beside.is_file() and os.access(beside, os.X_OK):
        return os.path.abspath(beside)
    raise ValidationError(f"no daprdockr executable found (looked at {argv0} and {beside}); "
                          "run the install from the installed daprdockr command")


def release_timeout() -> float:
    """How long the agent's shutdown may take to release its instances (``AgentConfig.shutdown_timeout``)."""
    default = next(f.default for f in dataclasses.fields(AgentConfig) if f.name == "shutdown_timeout")
    assert isinstance(default, float)
    return default


def unit_text(*, config: Path, options: dict[str, OptionDef], drain_default: float) -> str:
    """The unit for ``config`` (which must exist and be a valid agent configuration file)."""
    path = Path(os.path.abspath(config))
    if not path.is_file():
        raise ValidationError(f"{path}: no such file (write it first: `daprdockr agent --print-config` "
                              "prints every key)", field="--config")
    values = read_agent_file(path, options=options)
    drain = values["drain_deadline"].value if "drain_deadline" in values else drain_default
    assert isinstance(drain, float)
    return render_unit(argv=[daprdockr_executable(), "agent", "--config", str(path)], drain_deadline=drain,
                       release_timeout=release_timeout())


def write_unit(text: str, *, unit_dir: Path) -> Path:
    """Write the unit atomically (0644); returns its path."""
    target = unit_dir / UNIT_NAME
    partial = unit_dir / f".{UNIT_NAME}.tmp"
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        partial.write_text(text)
        partial.chmod(0o644)
        partial.replace(target)
    except OSError as exc:
        raise ValidationError(f"cannot write {target}: {exc}", field="--unit-dir") from None
    return target


def remove_unit(*, unit_dir: Path) -> Path | None:
    """Remove the unit; the path removed, None when there was none."""
    target = unit_dir / UNIT_NAME
    try:
        target.unlink()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValidationError(f"cannot remove {target}: {exc}", field="--unit-dir") from None
    return target
