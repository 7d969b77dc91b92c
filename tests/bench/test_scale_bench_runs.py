"""``bench/scale_bench.py`` still runs against the code it measures (a change of the planner's
signature once broke it unnoticed): a tiny cluster, a few events, every figure printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_scale_bench_runs_on_a_tiny_cluster() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "scale_bench.py"), "--sizes", "200,400", "--events", "6",
                        "--baseline-events", "1", "--nodes", "3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {cells[0]: cells for cells in map(str.split, r.stdout.splitlines())
            if cells[:1] in (["200"], ["400"]) and cells[1].endswith("ms")}
    assert set(rows) == {"200", "400"}, r.stdout
    assert all(len(row) == 8 and all(cell[0].isdigit() for cell in row) for row in rows.values()), rows
    assert "growth per 10x" in r.stdout and "3 nodes" in r.stdout


@pytest.mark.etcd
def test_scale_cli_bench_runs_on_a_tiny_cluster() -> None:
    """``bench/scale_cli_bench.py``: its own etcd, a drained hollow agent, every figure printed
    (the agent's rows are checked inside: ``status --json`` must name the agent as its source)."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "scale_cli_bench.py"), "--sizes", "300", "--runs", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    row = next(cells for cells in map(str.split, r.stdout.splitlines()) if cells[:1] == ["300"])
    assert len(row) == 8 and all(cell.endswith("s") and cell[0].isdigit() for cell in row[1:]), row
