"""scripts/setup.sh never stops or kills a process it did not start, and is safe to run again.

An unrelated nginx (its own config, pid file and loopback port, started here) runs while setup.sh
runs, once with nothing to install (this machine is set up: the path every ``make`` target
takes) and once through its install path, driven by a stand-in for apt-get that records what it
was asked and what policy-rc.d said about starting nginx and another service meanwhile.  The
same nginx pid answers HTTP afterwards.  (The old script ran ``service nginx stop`` and
``pkill -x nginx`` whenever it installed anything.)

setup.sh runs from a copy of the tree whose ``.venv`` is already set up (a link to this Python,
its markers newer than ``pyproject.toml``), so only its package logic runs: no venv is made.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, missing
from tests.support.procs import free_port, terminate, wait_port

pytestmark = [pytest.mark.nginx]

IP = "127.0.0.58"


@pytest.fixture
def unrelated_nginx(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(pid, port) of an nginx that has nothing to do with DaprDockr."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        missing("nginx")
    port = free_port(IP)
    prefix = tmp_path / "other-nginx"
    prefix.mkdir()
    (prefix / "nginx.conf").write_text(f"""
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
daemon off;
events {{ worker_connections 16; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{ listen {IP}:{port}; location / {{ return 200 "someone else's nginx\\n"; }} }}
}}
""")
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(IP, port, timeout=15, proc=proc)
        yield proc.pid, port
    finally:
        terminate(proc, grace=5)


def answers(port: int) -> str:
    conn = http.client.HTTPConnection(IP, port, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def set_up_tree(tmp: Path) -> Path:
    """A copy of the tree's setup.sh and pyproject.toml beside a venv that counts as installed."""
    tree = tmp / "tree"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts/setup.sh", tree / "scripts/setup.sh")
    shutil.copy2(ROOT / "pyproject.toml", tree / "pyproject.toml")
    (tree / ".venv/bin").mkdir(parents=True)
    (tree / ".venv/bin/python").symlink_to(sys.executable)
    (tree / ".venv/wheels").mkdir()
    old = time.time() - 3600
    os.utime(tree / "pyproject.toml", (old, old))
    (tree / ".venv/.installed").touch()
    (tree / ".venv/wheels/.done").touch()
    return tree


def test_setup_with_everything_installed_leaves_other_nginx_alone(
    unrelated_nginx: tuple[int, int], tmp_path: Path
) -> None:
    pid, port = unrelated_nginx
    tree = set_up_tree(tmp_path)
    fake_apt = tmp_path / "apt-get"
    fake_apt.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/apt.calls\n")
    fake_apt.chmod(0o755)
    out = subprocess.run(["bash", str(tree / "scripts/setup.sh")], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DAPRDOCKR_SETUP_APT": str(fake_apt)})
    assert out.returncode == 0, out.stderr
    if (tmp_path / "apt.calls").exists():
        missing(f"a set-up machine (setup.sh wanted to install: {(tmp_path / 'apt.calls').read_text()!r})")
    assert "installing" not in out.stdout and "creating .venv" not in out.stdout, out.stdout
    assert alive(pid)
    assert answers(port) == "someone else's nginx\n"


@pytest.mark.parametrize("foreign_policy", [False, True])
def test_setup_installing_packages_leaves_other_nginx_alone(
    unrelated_nginx: tuple[int, int], tmp_path: Path, foreign_policy: bool
) -> None:
    pid, port = unrelated_nginx
    tree = set_up_tree(tmp_path)
    policy = tmp_path / "policy-rc.d"
    if foreign_policy:
        policy.write_text("#!/bin/sh\nexit 0\n")
        policy.chmod(0o755)
    calls = tmp_path / "apt.calls"
    fake_apt = tmp_path / "apt-get"
    # what dpkg's invoke-rc.d would ask the policy while the packages install
    fake_apt.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
if [ "$1" = install ]; then
  {policy} nginx start; echo "policy nginx start: $?" >> {calls}
  {policy} nginx.service start; echo "policy nginx.service start: $?" >> {calls}  # (as deb-systemd-invoke asks)
  {policy} docker start; echo "policy docker start: $?" >> {calls}
fi
""")
    fake_apt.chmod(0o755)
    out = subprocess.run(["bash", str(tree / "scripts/setup.sh")], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DAPRDOCKR_SETUP_APT": str(fake_apt), "DAPRDOCKR_SETUP_ALSO": "nginx-light",
                              "DAPRDOCKR_SETUP_POLICY_RC": str(policy)})
    assert out.returncode == 0, out.stderr
    recorded = calls.read_text().splitlines()
    assert recorded[0] == "update -qq"
    assert recorded[1].startswith("install -y -qq --no-install-recommends") and "nginx-light" in recorded[1]
    if foreign_policy:  # not replaced, not removed: it decides
        assert recorded[2:] == ["policy nginx start: 0", "policy nginx.service start: 0", "policy docker start: 0"]
        assert policy.read_text() == "#!/bin/sh\nexit 0\n"
        assert "not replacing it" in out.stderr
    else:  # ours held nginx back, and only nginx, only while installing
        assert recorded[2:] == ["policy nginx start: 101", "policy nginx.service start: 101",  # (deb-systemd-invoke)
                                "policy docker start: 0"]
        assert not policy.exists()
    assert alive(pid), "setup.sh ended an nginx it did not start"
    assert answers(port) == "someone else's nginx\n"
