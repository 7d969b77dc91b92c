"""Version strings parsed out of the tools' own output, and one line per component."""

from __future__ import annotations

import pytest

from daprdockr.core.versions import NOT_FOUND, Probe, first_found, parse_version


@pytest.mark.parametrize(("tool", "output", "expected"), [
    ("etcd", "etcd Version: 3.4.23\nGit SHA: Not provided\nGo Version: go1.19.8\n", "3.4.23"),
    ("etcd", "etcd Version: 3.5.17\nGit SHA: 507c0de\n", "3.5.17"),
    ("etcd", "etcd Version: v3.6.0-rc.1\n", "3.6.0-rc.1"),
    ("etcd", "etcdctl version: 3.4.23\n", None),
    ("etcd", "", None),
    ("etcdctl", "etcdctl version: 3.4.23\nAPI version: 3.4\n", "3.4.23"),
    ("etcdctl", "Error: unknown command\n", None),
    ("nginx", "nginx version: nginx/1.22.1\n", "1.22.1"),
    ("nginx", "nginx version: openresty/1.25.3.1\n", "1.25.3.1"),
    ("nginx", "nginx: [emerg] open() failed\n", None),
    ("docker", "20.10.24+dfsg1 (API 1.41)\n", "20.10.24+dfsg1 (API 1.41)"),
    ("docker", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\n", None),
])
def test_parse_version(tool: str, output: str, expected: str | None) -> None:
    assert parse_version(tool, output) == expected


def test_unknown_tool_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        parse_version("podman", "podman version 4")


@pytest.mark.parametrize(("probes", "version", "source"), [
    ([Probe(source="server at http://a", version="3.5.1"), Probe(source="etcd --version", version="3.4.23")],
     "3.5.1", "server at http://a"),
    ([Probe(source="server at http://a", problem="timed out after 3s"), Probe(source="etcd --version",
                                                                              version="3.4.23")],
     "3.4.23", "etcd --version"),
    ([Probe(source="etcd --version", problem="not on PATH"), Probe(source="etcdctl version", problem="not on PATH")],
     None, "etcd --version: not on PATH; etcdctl version: not on PATH"),
    ([Probe(source="nginx -v")], None, "nginx -v: no version in its output"),
    ([], None, "nothing tried"),
])
def test_first_found(probes: list[Probe], version: str | None, source: str) -> None:
    got = first_found("etcd", probes)
    assert (got.version, got.source, got.found) == (version, source, version is not None)
    line = got.line()
    assert line.startswith("etcd      ")
    assert (NOT_FOUND in line) == (version is None)
    assert got.to_dict() == {"name": "etcd", "version": version, "source": source}
