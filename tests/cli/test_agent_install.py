"""``daprdockr agent install`` / ``uninstall`` as real processes; the unit passes the real
``systemd-analyze verify``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daprdockr.core.systemd_unit import UNIT_NAME

DAPRDOCKR = Path(sys.executable).parent / "daprdockr"
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def daprdockr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DAPRDOCKR), *args], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if not k.startswith("DAPRDOCKR_")})


def verify(unit: Path, workdir: Path) -> None:
    """``systemd-analyze verify`` on a copy of ``unit`` in a directory of its own: no complaint."""
    if not Path(ANALYZE).exists():
        pytest.fail("systemd-analyze is missing (apt-get install systemd)")
    copy_dir = workdir / "verify"
    copy_dir.mkdir()
    copy = copy_dir / UNIT_NAME
    shutil.copy(unit, copy)
    r = subprocess.run([ANALYZE, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (r.returncode, r.stdout, r.stderr)


def exec_start(text: str) -> str:
    (line,) = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=")


def test_install_writes_a_unit_systemd_accepts(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('node-id = "n1"\ndrain-deadline = 300\ndrain-on-shutdown = true\n')
    dry = daprdockr("agent", "install", "--config", str(config), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert exec_start(dry.stdout) == f"{DAPRDOCKR} agent --config {config}"
    lines = dry.stdout.splitlines()
    assert {"Type=notify", "NotifyAccess=main", "Restart=on-failure", "KillSignal=SIGTERM"} <= set(lines)
    stop = int(next(x for x in lines if x.startswith("TimeoutStopSec=")).partition("=")[2])
    assert stop > 300  # outlasts the drain the file allows
    assert any(x.startswith("WatchdogSec=") for x in lines) and any(x.startswith("LimitNOFILE=") for x in lines)
    assert not (tmp_path / "units").exists()  # (a dry run writes nothing)

    units = tmp_path / "units"
    wrote = daprdockr("agent", "install", "--config", str(config), "--unit-dir", str(units))
    assert wrote.returncode == 0, wrote.stderr
    unit = units / UNIT_NAME
    assert unit.read_text() == dry.stdout and oct(unit.stat().st_mode & 0o777) == "0o644"
    assert "systemctl daemon-reload" in wrote.stdout
    verify(unit, tmp_path)

    gone = daprdockr("agent", "uninstall", "--unit-dir", str(units))
    assert gone.returncode == 0 and not unit.exists() and "removed" in gone.stdout
    again = daprdockr("agent", "uninstall", "--unit-dir", str(units))
    assert again.returncode == 0 and "no daprdockr-agent.service" in again.stdout


def test_a_config_path_systemd_would_misread_is_quoted(tmp_path: Path) -> None:
    odd = tmp_path / "my conf $HOME 100%"
    odd.mkdir()
    config = odd / "agent.yaml"
    config.write_text("node-id: n1\n")
    r = daprdockr("agent", "install", "--config", str(config), "--unit-dir", str(tmp_path / "units"))
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "units" / UNIT_NAME).read_text()
    quoted = str(config).replace("%", "%%").replace("$", "$$")
    assert exec_start(text) == f'{DAPRDOCKR} agent --config "{quoted}"'
    verify(tmp_path / "units" / UNIT_NAME, tmp_path)


@pytest.mark.parametrize(("text", "message"), [
    ("bogus = 1\n", "agent.toml:1: unknown key 'bogus'"),
    ('drain-deadline = "long"\n', "agent.toml:1: drain-deadline must be a number"),
])
def test_no_unit_for_a_file_the_agent_would_refuse(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(text)
    r = daprdockr("agent", "install", "--config", str(config), "--unit-dir", str(tmp_path / "units"))
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "units" / UNIT_NAME).exists()


def test_no_unit_without_the_config_file(tmp_path: Path) -> None:
    r = daprdockr("agent", "install", "--config", str(tmp_path / "missing.toml"), "--dry-run")
    assert r.returncode == 2 and "no such file" in r.stderr and "--print-config" in r.stderr
