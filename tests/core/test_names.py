"""Name validation: every validator matches the whole string (a trailing newline is not a name)."""

from __future__ import annotations

import pytest

from daprdockr.core.names import (
    ServiceName,
    by_instance,
    instance_order,
    validate_env_key,
    validate_hostname,
    validate_image,
    validate_label,
    validate_label_key,
    validate_unicast_ip,
)
from daprdockr.errors import ValidationError

VALIDATORS = [
    (lambda v: validate_label(v, field="f"), "web"),
    (validate_hostname, "web.example.com"),
    (validate_image, "busybox:latest"),
    (validate_env_key, "PATH"),
    (validate_label_key, "com.example.team"),
    (lambda v: ServiceName.parse(v), "web.myapp"),
]


@pytest.mark.parametrize(("check", "good"), VALIDATORS)
@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\n.com", " ", "\x00", ";", "\t"])
def test_trailing_junk_is_refused(check, good, suffix) -> None:  # type: ignore[no-untyped-def]
    check(good)  # the clean value passes
    with pytest.raises(ValidationError):
        check(good + suffix)


@pytest.mark.parametrize("host", ["x\n.com", "a.b\n", "web.example.com\n", "-a.com", "a-.com", "a..com",
                                  "*.example.com", "a.com:80", "a b.com", "1.2.3.4", "x" * 64 + ".com"])
def test_hostnames_that_would_inject_nginx_config_are_refused(host: str) -> None:
    with pytest.raises(ValidationError):
        validate_hostname(host)


@pytest.mark.parametrize("key", ["daprdockr.node", "com.docker.compose.project", "io.docker.x",
                                 "org.dockerproject.y", "com.docker.swarm.service.id"])
def test_reserved_label_namespaces_are_refused(key: str) -> None:
    with pytest.raises(ValidationError, match="reserved"):
        validate_label_key(key)


@pytest.mark.parametrize("ip", ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "240.0.0.1", "ff02::1",
                                "localhost", "127.0.0.1\n", "10.0.0.1/8", ""])
def test_advertise_ip_must_be_one_unicast_address(ip: str) -> None:
    with pytest.raises(ValidationError):
        validate_unicast_ip(ip, field="--advertise-ip")


@pytest.mark.parametrize("ip", ["127.0.0.11", "10.1.2.3", "192.168.0.7", "::1", "fd00::5"])
def test_unicast_addresses_pass(ip: str) -> None:
    assert validate_unicast_ip(ip, field="--advertise-ip") == ip


@pytest.mark.parametrize(("keys", "ordered"), [
    # by the <service>.<group> text first (not by group), then by number (not as text)
    ([("web", "b", 1), ("api", "z", 1)], [("api", "z", 1), ("web", "b", 1)]),
    ([("web", "a", 10), ("web", "a", 9), ("web", "a", 1)], [("web", "a", 1), ("web", "a", 9), ("web", "a", 10)]),
    ([("web", "b", 1), ("web", "a", 2)], [("web", "a", 2), ("web", "b", 1)]),
])
def test_instances_are_ordered_by_service_text_then_number(keys: list[tuple[str, str, int]],
                                                           ordered: list[tuple[str, str, int]]) -> None:
    def name(s: str, g: str) -> ServiceName:
        return ServiceName(group=g, service=s)

    items = {(name(s, g), n): None for s, g, n in keys}
    assert [(k[0].service, k[0].group, k[1]) for k, _ in sorted(items.items(), key=by_instance)] == ordered
    assert sorted(((name(s, g), n) for s, g, n in keys), key=lambda k: instance_order(*k)) == [
        (name(s, g), n) for s, g, n in ordered]
