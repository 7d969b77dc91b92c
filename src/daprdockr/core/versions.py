"""What ``daprdockr version`` reports: version strings parsed out of the tools' own output.

Pure: the probes (running ``etcd --version``, asking the Docker engine, ...) live in
:mod:`daprdockr.adapters.version_probe`; here each probe's text becomes a version or nothing,
and the results of a component's probes become one report line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

NOT_FOUND = "not found"

# the first line of each tool's output that names its version (etcd 3.4/3.5, etcdctl, nginx -v on
# stderr, `docker version --format` as we ask for it)
_PATTERNS: dict[str, re.Pattern[str]] = {
    "etcd": re.compile(r"^etcd Version:\s*v?(\S+)", re.M),
    "etcdctl": re.compile(r"^etcdctl version:\s*v?(\S+)", re.M),
    "nginx": re.compile(r"^nginx version:\s*(?:\S+/)?(\S+)", re.M),
    "docker": re.compile(r"^(\S+ \(API \S+\))$", re.M),
}


def parse_version(tool: str, output: str) -> str | None:
    """The version ``tool`` printed in ``output`` (``tool``: etcd, etcdctl, nginx or docker), or None."""
    pattern = _PATTERNS.get(tool)
    if pattern is None:
        raise KeyError(tool)
    match = pattern.search(output)
    return match.group(1) if match else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """One way of finding a component's version: ``source`` says how (``etcd --version``, a URL),
    ``version`` is what it found, else ``problem`` says why not (``not on PATH``, ``timed out``)."""

    source: str
    version: str | None = None
    problem: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ComponentVersion:
    name: str
    version: str | None
    source: str  # where the version came from; when none was found: every probe and its problem

    @property
    def found(self) -> bool:
        return self.version is not None

    def line(self, width: int = 10) -> str:
        if self.version is None:
            return f"{self.name:<{width}}{NOT_FOUND} ({self.source})"
        return f"{self.name:<{width}}{self.version} ({self.source})"

    def to_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "version": self.version, "source": self.source}


def first_found(name: str, probes: Sequence[Probe]) -> ComponentVersion:
    """The first probe that found a version, else "not found" with what each probe said."""
    for probe in probes:
        if probe.version is not None:
            return ComponentVersion(name=name, version=probe.version, source=probe.source)
    tried = "; ".join(f"{p.source}: {p.problem or 'no version in its output'}" for p in probes)
    return ComponentVersion(name=name, version=None, source=tried or "nothing tried")
