"""The plan of ``daprdockr apply``: the desired specs (from files) against the stored ones, as one
change per service (created, deleted, scaled, replaced with the fields that changed, unchanged).

Pure: the caller reads the stored specs with the mod revision of each key (the plan's guard: the
write of a change is refused if its key moved since) and writes the changes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.errors import ValidationError

ChangeKind = Literal["create", "delete", "scale", "replace", "unchanged"]
PAST = {"create": "created", "delete": "deleted", "scale": "scaled", "replace": "replaced", "unchanged": "unchanged"}
KINDS: tuple[ChangeKind, ...] = ("create", "scale", "replace", "delete", "unchanged")


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored spec key: its spec (``None`` when malformed, ``problem`` saying why) and mod revision."""

    revision: int
    spec: ServiceSpec | None = None
    problem: str = ""


@dataclass(frozen=True, slots=True)
class Change:
    """What applying the files does to one service.  ``revision`` is the mod revision of its key
    when the plan was read (0: absent); ``fields`` the top-level spec fields that differ."""

    name: ServiceName
    kind: ChangeKind
    desired: ServiceSpec | None = None
    revision: int = 0
    fields: tuple[str, ...] = ()
    instances_from: int | None = None
    instances_to: int | None = None
    problem: str = ""  # the stored spec was malformed (a replace)

    @property
    def writes(self) -> bool:
        return self.kind != "unchanged"

    def line(self) -> str:
        """``web.myapp: scaled 2 -> 5``, ``api.myapp: replaced (env, image)``, ..."""
        what = PAST[self.kind]
        if self.kind == "create" and self.desired is not None:
            what += f" ({self.desired.instances} instance(s) of {self.desired.image})"
        elif self.kind == "scale":
            what += f" {self.instances_from} -> {self.instances_to}"
        elif self.kind == "replace":
            what += (f" (the stored spec is invalid: {self.problem})" if self.problem
                     else f" ({', '.join(self.fields)})")
            if "instances" in self.fields:
                what += f", instances {self.instances_from} -> {self.instances_to}"
        return f"{self.name}: {what}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"service": str(self.name), "change": PAST[self.kind]}
        if self.kind in ("scale", "replace"):
            out["fields"] = list(self.fields)
        if self.instances_from != self.instances_to:
            out["from"], out["to"] = self.instances_from, self.instances_to
        if self.problem:
            out["invalid"] = self.problem
        return out


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, ...]:
    """The top-level fields whose values differ (a field only one side has counts), sorted."""
    return tuple(sorted(k for k in old.keys() | new.keys() if old.get(k, _ABSENT) != new.get(k, _ABSENT)))


_ABSENT = object()


def _change(spec: ServiceSpec, stored: Stored | None) -> Change:
    if stored is None:
        return Change(name=spec.name, kind="create", desired=spec, instances_to=spec.instances)
    if stored.spec is None:
        return Change(name=spec.name, kind="replace", desired=spec, revision=stored.revision,
                      instances_to=spec.instances, problem=stored.problem or "malformed")
    fields = changed_fields(stored.spec.to_dict(), spec.to_dict())
    kind: ChangeKind = "unchanged" if not fields else "scale" if fields == ("instances",) else "replace"
    return Change(name=spec.name, kind=kind, desired=spec, revision=stored.revision, fields=fields,
                  instances_from=stored.spec.instances, instances_to=spec.instances)


def plan_apply(
    desired: Sequence[ServiceSpec], stored: Mapping[ServiceName, Stored], *, prune_group: str | None = None,
) -> list[Change]:
    """One change per desired service, plus a delete for every stored service of ``prune_group``
    that no desired spec names; sorted by name.  Two desired specs of one name are an error."""
    by_name: dict[ServiceName, ServiceSpec] = {}
    for spec in desired:
        if spec.name in by_name:
            raise ValidationError(f"{spec.name} is given twice", field="name")
        by_name[spec.name] = spec
    changes = [_change(spec, stored.get(name)) for name, spec in by_name.items()]
    if prune_group is not None:
        changes += [Change(name=name, kind="delete", revision=s.revision,
                           instances_from=s.spec.instances if s.spec else None, problem=s.problem)
                    for name, s in stored.items() if name.group == prune_group and name not in by_name]
    return sorted(changes, key=lambda c: c.name)


def summary(changes: Iterable[Change]) -> str:
    """``2 created, 1 scaled, 0 replaced, 0 deleted, 47 unchanged``."""
    counts = dict.fromkeys(KINDS, 0)
    for change in changes:
        counts[change.kind] += 1
    return ", ".join(f"{counts[k]} {PAST[k]}" for k in KINDS)
