"""Host IP detection on this machine's real interfaces and routes, checked against iproute2 (``ip``),
and in a private network namespace whose interface carries two addresses (nothing on the machine's
own network changes: ``unshare -n`` gives the command a namespace of its own)."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daprdockr.adapters.hostip import interface_addresses

BIN = Path(sys.executable).parent


def ip(*args: str) -> str:
    if not shutil.which("ip"):
        pytest.skip("iproute2 (ip) is not installed")
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def test_every_ipv4_address_of_every_interface_is_listed() -> None:
    expected = set()
    for line in ip("-4", "-o", "addr", "show").splitlines():
        fields = line.split()  # "2: eth0    inet 192.0.2.2/24 brd ... scope global eth0"
        expected.add((fields[1], ipaddress.IPv4Interface(fields[3])))
    assert set(interface_addresses()) == expected


def test_daprdockrcmd_ip_is_the_default_routes_interface_address() -> None:
    default = ip("-4", "route", "show", "default").split()  # "default via 192.0.2.1 dev eth0 ..."
    if "via" not in default:
        pytest.skip("this machine has no default route through a gateway")
    gateway = ipaddress.IPv4Address(default[default.index("via") + 1])
    dev = default[default.index("dev") + 1]
    own = [ipaddress.IPv4Interface(line.split()[3]) for line in ip("-4", "-o", "addr", "show", "dev", dev).splitlines()]
    expected = next(str(i.ip) for i in own if gateway in i.network)
    r = subprocess.run([str(BIN / "daprdockrcmd"), "-ip"], capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout.strip()) == (0, expected), r.stderr


NETNS = """
set -e
ip link set lo up
ip link add v1 type veth peer name v0
ip addr add 192.168.1.9/24 dev v1
ip addr add 10.0.0.5/24 dev v0
ip addr add 192.168.1.5/24 dev v0
ip link set v0 up
ip link set v1 up
ip route add default via 192.168.1.1 dev v0
exec "$@"
"""


def test_a_second_address_of_the_default_routes_interface_is_found(tmp_path: Path) -> None:
    """v0 (the default route's interface) has 10.0.0.5 first and 192.168.1.5 second; v1 also has
    an address in the gateway's subnet.  The answer is v0's second address."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
        pytest.skip("cannot create a network namespace here (needs root)")
    script = tmp_path / "netns.sh"
    script.write_text(NETNS)
    r = subprocess.run(["unshare", "-n", "sh", str(script), str(BIN / "daprdockrcmd"), "-ip"],
                       capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout.strip()) == (0, "192.168.1.5"), r.stderr
