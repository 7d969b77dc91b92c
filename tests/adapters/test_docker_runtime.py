"""The Docker runtime's container config, checked on a real container with ``docker inspect``."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest

from daprdockr.adapters.docker_runtime import DockerRuntime
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.errors import ContainerError

pytestmark = pytest.mark.docker


def inspect(*container_ids: str) -> list[dict[str, Any]]:
    """``docker inspect`` of the containers, as Docker prints it."""
    out = subprocess.run(["docker", "inspect", *container_ids], capture_output=True, text=True, check=True).stdout
    return cast(list[dict[str, Any]], json.loads(out))


async def test_containers_run_without_new_privileges_and_with_only_our_labels(docker_image: str) -> None:
    runtime = DockerRuntime(node_id="sec1", advertise_ip="127.0.0.11")
    spec = ServiceSpec.from_dict({"image": docker_image, "labels": {"team": "a"}, "http_port": 8080,
                                  "cmd": ["httpd", "-f", "-p", "8080"]}, name=ServiceName(group="sec", service="web"))
    info = await runtime.start_instance(spec=spec, number=1)
    try:
        inspected = inspect(info.id)[0]
        assert "no-new-privileges" in (inspected["HostConfig"]["SecurityOpt"] or [])
        labels = inspected["Config"]["Labels"]
        assert labels["team"] == "a" and labels["daprdockr.node"] == "sec1"
        bindings = inspected["HostConfig"]["PortBindings"]["8080/tcp"]
        assert [b["HostIp"] for b in bindings] == ["127.0.0.11"]
    finally:
        await runtime.remove(info.id, grace=0)
        await runtime.close()


async def test_health_probes_run_in_the_container_and_read_the_images_healthcheck(docker_image: str) -> None:
    """``cmd`` checks run in the container (exit code), ``docker`` checks read the HEALTHCHECK
    status of an image that has one (built here with ``docker commit --change``), and a start
    beside the current container gets a name of its own."""
    runtime = DockerRuntime(node_id="hc1", advertise_ip="127.0.0.11")
    base = subprocess.run(["docker", "run", "-d", docker_image, "sleep", "1"], capture_output=True, text=True,
                          check=True).stdout.strip()
    image = "daprdockr-test/healthcheck:latest"
    subprocess.run(["docker", "commit", "--change", 'HEALTHCHECK --interval=1s --retries=1 CMD ["sh", "-c", '
                    '"test -f /tmp/ok"]', base, image], capture_output=True, check=True)
    subprocess.run(["docker", "rm", "-f", base], capture_output=True)
    name = ServiceName(group="hc", service="web")
    spec = ServiceSpec.from_dict({"image": image, "cmd": ["sleep", "300"], "health": "docker"}, name=name)
    info = await runtime.start_instance(spec=spec, number=1)
    beside = await runtime.start_instance(spec=spec, number=1, beside=True)
    try:
        assert info.id != beside.id and (await runtime.inspect(beside.id)) is not None
        assert await runtime.exec_ok(info.id, ["sh", "-c", "test -d /tmp"], within=5)
        assert not await runtime.exec_ok(info.id, ["sh", "-c", "exit 3"], within=5)
        assert not await runtime.exec_ok(info.id, ["sleep", "10"], within=0.5)  # too slow: failed
        assert await runtime.docker_health(info.id) in ("starting", "unhealthy")
        subprocess.run(["docker", "exec", info.id, "sh", "-c", "touch /tmp/ok"], check=True)
        for _ in range(50):
            if await runtime.docker_health(info.id) == "healthy":
                break
            await asyncio.sleep(0.2)
        assert await runtime.docker_health(info.id) == "healthy"
    finally:
        for cid in (info.id, beside.id):
            await runtime.remove(cid, grace=0)
        assert await runtime.inspect(info.id) is None
        await runtime.close()


async def test_every_container_field_reaches_docker(docker_image: str, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "www").mkdir(parents=True)
    runtime = DockerRuntime(node_id="cf1", advertise_ip="127.0.0.11", dns_server="10.9.9.9",
                            allow_bind=(str(allowed),), listen_wait=0.5)  # (its program never listens)
    name = ServiceName(group="cf", service="web")
    spec = ServiceSpec.from_dict({
        "image": docker_image, "cmd": ["-c", "sleep 300"], "entrypoint": ["/bin/sh"], "user": "65534:65534",
        "workdir": "/tmp", "memory": "64m", "cpus": 0.5, "cpu_shares": 256, "pids_limit": 64,
        "volumes": ["/scratch", "daprdockr-test-vol:/data:ro", f"{allowed}/www:/www"], "http_port": 8080,
    }, name=name)
    info = await runtime.start_instance(spec=spec, number=2)
    try:
        got = inspect(info.id)[0]
        config, host = got["Config"], got["HostConfig"]
        assert (config["Entrypoint"], config["Cmd"], config["User"], config["WorkingDir"]) == (
            ["/bin/sh"], ["-c", "sleep 300"], "65534:65534", "/tmp")
        assert config["Hostname"] == "2.web.cf" and "/scratch" in config["Volumes"]
        assert (host["Memory"], host["NanoCpus"], host["CpuShares"], host["PidsLimit"]) == (
            64 * 1024**2, 500_000_000, 256, 64)
        assert host["Dns"] == ["10.9.9.9"] and host["NetworkMode"] == "bridge"
        mounts = {m["Destination"]: m for m in got["Mounts"]}
        assert mounts["/data"]["Type"] == "volume" and mounts["/data"]["Name"] == "daprdockr-test-vol"
        assert mounts["/data"]["RW"] is False
        assert mounts["/www"]["Type"] == "bind" and mounts["/www"]["Source"] == f"{allowed}/www"
        assert mounts["/scratch"]["Type"] == "volume"
    finally:
        await runtime.remove(info.id, grace=0)
        subprocess.run(["docker", "volume", "rm", "-f", "daprdockr-test-vol"], capture_output=True)
        await runtime.close()


async def test_an_explicit_hostname_is_used_as_given(docker_image: str) -> None:
    """Every instance gets the spec's hostname itself (the original appended i<n>: webi1)."""
    runtime = DockerRuntime(node_id="cf3", advertise_ip="127.0.0.11")
    spec = ServiceSpec.from_dict({"image": docker_image, "cmd": ["sleep", "300"], "hostname": "web-1.local"},
                                 name=ServiceName(group="cf", service="host"))
    started = [await runtime.start_instance(spec=spec, number=n) for n in (1, 2)]
    try:
        got = inspect(*(i.id for i in started))
        assert [c["Config"]["Hostname"] for c in got] == ["web-1.local", "web-1.local"]
        seen = subprocess.run(["docker", "exec", started[0].id, "hostname"], capture_output=True, text=True, check=True)
        assert seen.stdout.strip() == "web-1.local"
    finally:
        for info in started:
            await runtime.remove(info.id, grace=0)
        await runtime.close()


async def test_a_bind_mount_outside_the_allowed_paths_is_refused_and_nothing_starts(
    docker_image: str, tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "link").symlink_to("/etc")
    name = ServiceName(group="cf", service="bind")
    for rule, source in [((), "/etc"), ((str(allowed),), "/etc"), ((str(allowed),), f"{allowed}/link"),
                         ((str(allowed),), f"{allowed}-sibling")]:
        runtime = DockerRuntime(node_id="cf2", advertise_ip="127.0.0.11", allow_bind=rule)
        spec = ServiceSpec.from_dict({"image": docker_image, "cmd": ["sleep", "30"],
                                      "volumes": [f"{source}:/host"]}, name=name)
        try:
            with pytest.raises(ContainerError, match="--allow-bind") as err:
                await runtime.start_instance(spec=spec, number=1)
            assert not err.value.transient and "cf2" in str(err.value)
            assert await runtime.list_managed() == []
        finally:
            await runtime.close()


def test_containers_get_the_agents_dns_only_where_they_can_reach_it() -> None:
    name = ServiceName(group="cf", service="dns")
    bridge = ServiceSpec.from_dict({"image": "x"}, name=name)
    host = ServiceSpec.from_dict({"image": "x", "network": "host"}, name=name)
    assert DockerRuntime(node_id="n", advertise_ip="10.0.0.5", dns_server="10.0.0.5").container_dns(bridge) == [
        "10.0.0.5"]
    loopback = DockerRuntime(node_id="n", advertise_ip="127.0.0.11", dns_server="127.0.0.11")
    assert loopback.container_dns(bridge) == []  # a bridge container's 127.0.0.11 is its own loopback
    assert loopback.container_dns(host) == ["127.0.0.11"]
    assert DockerRuntime(node_id="n", advertise_ip="10.0.0.5").container_dns(bridge) == []


async def test_drain_counts_client_connections_inside_the_container(docker_image: str) -> None:
    """The drain before a stop counts the connections the container itself holds on its own port
    (its network namespace's socket table): a connection through the loopback publish shows there
    as one through Docker's DNAT rules would (the host has no socket for those); once the client
    closes it, the drain is over at once."""
    from daprdockr.adapters.procs import established_on_ports

    runtime = DockerRuntime(node_id="dr1", advertise_ip="127.0.0.11")
    spec = ServiceSpec.from_dict({"image": docker_image, "http_port": 8080, "cmd": ["httpd", "-f", "-p", "8080"]},
                                 name=ServiceName(group="dr", service="web"))
    info = await runtime.start_instance(spec=spec, number=1)
    try:
        pid = inspect(info.id)[0]["State"]["Pid"]
        assert established_on_ports(pid, [8080]) == 0
        _, writer = await asyncio.open_connection("127.0.0.11", info.ports[0][1])  # a client, idle
        await asyncio.sleep(0.3)
        assert established_on_ports(pid, [8080]) == 1
        assert await runtime.drain(info, within=0.5) == 1  # still open after the bound
        writer.close()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await runtime.drain(info, within=5) == 0
        assert loop.time() - t0 < 2
    finally:
        await runtime.remove(info.id, grace=0)
        await runtime.close()


async def test_a_start_returns_once_the_program_listens_on_its_http_port(docker_image: str) -> None:
    """nginx routes an instance as soon as its record says running, and Docker's userland proxy
    resets every connection until the container's program listens: so a start returns only once
    the program listens on ``http_port``.  A request sent the moment it returns is answered (it
    was reset before: the program here listens 1 s after the container starts)."""
    runtime = DockerRuntime(node_id="ls1", advertise_ip="127.0.0.11")
    spec = ServiceSpec.from_dict(
        {"image": docker_image, "http_port": 8080,
         "cmd": ["sh", "-c", "mkdir -p /www; echo ok > /www/id; sleep 1; exec httpd -f -p 8080 -h /www"]},
        name=ServiceName(group="ls", service="web"))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    info = await runtime.start_instance(spec=spec, number=1)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.11", dict(info.ports)["8080/tcp"])
        writer.write(b"GET /id HTTP/1.0\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n", 1)[0], answer
        assert loop.time() - t0 >= 0.9
    finally:
        await runtime.remove(info.id, grace=0)
        await runtime.close()


async def test_a_program_that_never_listens_is_started_after_the_bound_with_a_warning(
    docker_image: str, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = DockerRuntime(node_id="ls2", advertise_ip="127.0.0.11", listen_wait=0.5)
    spec = ServiceSpec.from_dict({"image": docker_image, "http_port": 8080, "cmd": ["sleep", "300"]},
                                 name=ServiceName(group="ls", service="web"))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    info = await runtime.start_instance(spec=spec, number=1)
    try:
        assert 0.5 <= loop.time() - t0 < 5
        assert info.running
        assert "does not listen on port 8080 after" in caplog.text
    finally:
        await runtime.remove(info.id, grace=0)
        await runtime.close()


async def test_drain_also_waits_for_a_connection_the_userland_proxy_holds(docker_image: str) -> None:
    """Docker's userland proxy holds a client's connection before the container has one: while
    its SYN to a busy container (a full listen backlog drops it) waits to be sent again.  Played
    here by dropping SYNs inside the container's network namespace (iptables through nsenter):
    the container's own table shows nothing, the proxy holds the client, and the drain waits for
    it (the old rule, inside only, said drained at once and the stop reset the request).  Once
    SYNs pass again the request is served and the drain ends."""
    from daprdockr.adapters.procs import established_on_ports

    runtime = DockerRuntime(node_id="dr2", advertise_ip="127.0.0.11")
    serve = "mkdir -p /www; echo ok > /www/id; exec httpd -f -p 8080 -h /www"
    spec = ServiceSpec.from_dict({"image": docker_image, "http_port": 8080, "cmd": ["sh", "-c", serve]},
                                 name=ServiceName(group="dr", service="proxied"))
    info = await runtime.start_instance(spec=spec, number=1)
    pid = str(inspect(info.id)[0]["State"]["Pid"])
    rule = ["INPUT", "-p", "tcp", "--dport", "8080", "--syn", "-j", "DROP"]
    subprocess.run(["nsenter", "-t", pid, "-n", "iptables", "-I", *rule], check=True)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.11", dict(info.ports)["8080/tcp"])
        writer.write(b"GET /id HTTP/1.0\r\n\r\n")
        await asyncio.sleep(0.3)
        assert established_on_ports(int(pid), [8080]) == 0  # the container has seen nothing
        assert await runtime.drain(info, within=0.5) == 1
        subprocess.run(["nsenter", "-t", pid, "-n", "iptables", "-D", *rule], check=True)
        answer = await asyncio.wait_for(reader.read(), 10)  # the proxy's next SYN gets through
        writer.close()
        assert b" 200 " in answer.split(b"\r\n", 1)[0], answer
        assert await runtime.drain(info, within=5) == 0
    finally:
        subprocess.run(["nsenter", "-t", pid, "-n", "iptables", "-D", *rule], capture_output=True)
        await runtime.remove(info.id, grace=0)
        await runtime.close()


async def test_a_paused_container_is_listed_and_inspected_as_paused_not_exited(docker_image: str) -> None:
    """Regression: Docker's "paused" state read as not running, and the agent restarted the
    container (SIGKILL, exit 137) ~2 s after a ``docker pause``."""
    runtime = DockerRuntime(node_id="pause1", advertise_ip="127.0.0.11")
    spec = ServiceSpec.from_dict({"image": docker_image, "http_port": 8080, "cmd": ["httpd", "-f", "-p", "8080"]},
                                 name=ServiceName(group="pause", service="web"))
    info = await runtime.start_instance(spec=spec, number=1)
    try:
        assert info.serving and not info.paused
        subprocess.run(["docker", "pause", info.id], check=True, capture_output=True)
        listed = [c for c in await runtime.list_managed() if c.id == info.id]
        inspected = await runtime.inspect(info.id)
        for c in (*listed, inspected):
            assert c is not None and c.running and c.paused and not c.serving
        assert listed
        subprocess.run(["docker", "unpause", info.id], check=True, capture_output=True)
        again = await runtime.inspect(info.id)
        assert again is not None and again.serving
    finally:
        await runtime.remove(info.id, grace=0)
        await runtime.close()


def make_unremovable(container_id: str, path: str) -> str:
    """Make Docker's removal of the container fail (overlay2: "failed to remove root filesystem ...
    operation not permitted", then "removal ... is already in progress"), as a busy rootfs did after
    a dockerd restart: an immutable file in its writable layer.  Returns the file (to undo it)."""
    upper = inspect(container_id)[0]["GraphDriver"]["Data"]["UpperDir"]
    target = f"{upper}{path}"
    subprocess.run(["chattr", "+i", target], check=True, capture_output=True)
    return target


async def test_a_container_docker_cannot_remove_does_not_keep_its_instance_from_starting(docker_image: str) -> None:
    runtime = DockerRuntime(node_id="stuck1", advertise_ip="127.0.0.11")
    spec = ServiceSpec.from_dict({"image": docker_image, "http_port": 8080,
                                  "cmd": ["sh", "-c", "echo x > /stuck; exec httpd -f -p 8080"]},
                                 name=ServiceName(group="stuck", service="web"))
    old = await runtime.start_instance(spec=spec, number=1)
    immutable = make_unremovable(old.id, "/stuck")
    new = None
    try:
        subprocess.run(["docker", "kill", old.id], check=True, capture_output=True)
        with pytest.raises(ContainerError):
            await runtime.remove(old.id, grace=0)  # Docker marks it dead ("Removal In Progress")
        dead = await runtime.inspect(old.id)
        assert dead is not None and dead.doomed and not dead.running
        assert [c.doomed for c in await runtime.list_managed() if c.id == old.id] == [True]
        new = await runtime.start_instance(spec=spec, number=1)  # the name is still held by the dead one
        assert new.id != old.id and new.serving
        name = inspect(new.id)[0]["Name"].lstrip("/")
        stem = "daprdockr.stuck1.web.stuck.1."
        assert name.startswith(stem) and len(name) == len(stem) + 6
        assert {c.id for c in await runtime.list_managed() if c.key == new.key} == {old.id, new.id}
    finally:
        subprocess.run(["chattr", "-i", immutable], capture_output=True)
        await runtime.remove(old.id, grace=0)
        if new is not None:
            await runtime.remove(new.id, grace=0)
        await runtime.close()
    assert await DockerRuntime(node_id="stuck1", advertise_ip="127.0.0.11").inspect(old.id) is None


async def test_a_stopped_container_is_started_again_as_it_is(docker_image: str) -> None:
    runtime = DockerRuntime(node_id="again1", advertise_ip="127.0.0.11")
    spec = ServiceSpec.from_dict({"image": docker_image, "http_port": 8080, "cmd": ["httpd", "-f", "-p", "8080"]},
                                 name=ServiceName(group="again", service="web"))
    info = await runtime.start_instance(spec=spec, number=1)
    try:
        subprocess.run(["docker", "stop", "-t", "0", info.id], check=True, capture_output=True)
        stopped = await runtime.inspect(info.id)
        assert stopped is not None and not stopped.running
        again = await runtime.restart_instance(stopped, spec=spec)
        assert again.id == info.id and again.serving and again.ports
    finally:
        await runtime.remove(info.id, grace=0)
        await runtime.close()


async def test_an_exited_container_is_inspected_with_how_long_it_ran(docker_image: str) -> None:
    """The engine's own StartedAt/FinishedAt: a program that exits at once ran for well under a
    second however late it is looked at; a running one has no run time yet; a start again
    forgets the last run's."""
    runtime = DockerRuntime(node_id="ran1", advertise_ip="127.0.0.11")
    spec = ServiceSpec.from_dict({"image": docker_image, "cmd": ["sh", "-c", "sleep 1; exit 3"]},
                                 name=ServiceName(group="ran", service="quick"))
    info = await runtime.start_instance(spec=spec, number=1)
    try:
        running = await runtime.inspect(info.id)
        assert running is not None and running.running and running.ran_for is None
        subprocess.run(["docker", "wait", info.id], check=True, capture_output=True)
        await asyncio.sleep(1.5)  # looked at late: the run time stays the run's, not the wait's
        exited = await runtime.inspect(info.id)
        assert exited is not None and not exited.running
        assert exited.ran_for is not None and 0.9 <= exited.ran_for < 2.0, exited.ran_for
        await runtime.restart_instance(exited, spec=spec)
        again = await runtime.inspect(info.id)
        assert again is not None and (again.running or again.ran_for is not None)
        listed = [c for c in await runtime.list_managed() if c.id == info.id]
        assert listed and listed[0].ran_for is None  # (a listing does not carry it)
    finally:
        await runtime.remove(info.id, grace=0)
        await runtime.close()
