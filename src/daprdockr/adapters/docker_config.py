"""The ``POST /containers/create`` body of an instance: image, command, environment, labels, published
ports (``http_port`` and the extra ``ports`` on the agent's advertise address, host-assigned),
``no-new-privileges``, limits, the agent's DNS where the container can reach it, and the
``--allow-bind`` rule for bind mounts.  (User labels never use the reserved namespaces: refused at
validation.)"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from daprdockr.adapters.docker_client import DockerEngine
from daprdockr.core.containers import container_labels
from daprdockr.core.containerspec import default_hostname
from daprdockr.core.model import ServiceSpec
from daprdockr.errors import ContainerError


class ContainerConfigs(DockerEngine):
    """Container configs of this node (a part of :class:`~daprdockr.adapters.docker_runtime.DockerRuntime`)."""

    def container_dns(self, spec: ServiceSpec) -> list[str]:
        """The agent's DNS for the container's resolv.conf, when the container can reach it: from
        the host network any address, from a bridge network not a loopback one (that would be the
        container's own loopback, and it would resolve nothing)."""
        if self.dns_server is None or spec.container.network == "none":
            return []
        if ipaddress.ip_address(self.dns_server).is_loopback and spec.container.network != "host":
            return []
        return [self.dns_server]

    def check_binds(self, spec: ServiceSpec) -> None:
        """A bind mount's host path must lie under one of this agent's ``--allow-bind`` paths
        (symbolic links resolved); else a terminal ContainerError naming the rule."""
        for volume in spec.container.binds():
            real = os.path.realpath(volume.source)
            if not any(real == allowed or real.startswith(allowed.rstrip("/") + "/") for allowed in self.allow_bind):
                rule = ", ".join(self.allow_bind) if self.allow_bind else "none"
                raise ContainerError(
                    f"bind mount of host path {volume.source} is not allowed on node {self.node_id} "
                    f"(its --allow-bind paths: {rule})", transient=False)

    def container_config(self, *, spec: ServiceSpec, number: int) -> dict[str, Any]:
        """The ``POST /containers/create`` body for instance ``number`` of ``spec``."""
        ports = [str(p) for p in spec.container_ports()]
        opts = spec.container
        host_config: dict[str, Any] = {
            "PortBindings": {p: [{"HostIp": self.advertise_ip, "HostPort": ""}] for p in ports},
            "RestartPolicy": {"Name": "no"},
            "Init": True,
            "SecurityOpt": ["no-new-privileges"],  # setuid binaries cannot raise privileges
            "NetworkMode": opts.network,
            "Mounts": [{"Type": v.kind, "Source": v.source, "Target": v.target, "ReadOnly": v.read_only}
                       for v in opts.volumes if v.kind != "anonymous"],
        }
        if dns := self.container_dns(spec):
            host_config["Dns"] = dns
        for key, value in (("Memory", opts.memory), ("NanoCpus", int(opts.cpus * 1e9)),
                           ("CpuShares", opts.cpu_shares), ("PidsLimit", opts.pids_limit)):
            if value:
                host_config[key] = value
        config: dict[str, Any] = {
            "Image": spec.image,
            "Env": [f"{k}={v}" for k, v in spec.env]
            + [
                f"DAPRDOCKR_SERVICE={spec.name}",
                f"DAPRDOCKR_INSTANCE={number}",
                f"DAPRDOCKR_NODE={self.node_id}",
            ],
            "Labels": {
                **dict(spec.labels),
                **container_labels(node_id=self.node_id, service=spec.name, number=number,
                                   spec_hash=spec.runtime_hash),
            },
            "ExposedPorts": {p: {} for p in ports},
            "Hostname": opts.hostname or default_hostname(number=number, service=spec.name.service,
                                                          group=spec.name.group),
            "HostConfig": host_config,
        }
        if spec.cmd:
            config["Cmd"] = list(spec.cmd)
        if opts.entrypoint is not None:
            config["Entrypoint"] = list(opts.entrypoint)
        if opts.user:
            config["User"] = opts.user
        if opts.workdir:
            config["WorkingDir"] = opts.workdir
        if anonymous := [v.target for v in opts.volumes if v.kind == "anonymous"]:
            config["Volumes"] = {t: {} for t in anonymous}
        return config
