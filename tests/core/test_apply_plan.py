"""The plan of ``apply`` (core/apply_plan.py): desired specs against stored ones, as tables."""

from __future__ import annotations

from typing import Any

import pytest

from daprdockr.core.apply_plan import Change, Stored, changed_fields, plan_apply, summary
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.errors import ValidationError

IMG = "nginx:alpine"


def spec(name: str, **fields: Any) -> ServiceSpec:
    return ServiceSpec.from_dict({"name": name, "image": IMG, **fields})


def n(text: str) -> ServiceName:
    return ServiceName.parse(text)


def stored(*specs: ServiceSpec, revision: int = 7) -> dict[ServiceName, Stored]:
    return {s.name: Stored(revision=revision, spec=s) for s in specs}


@pytest.mark.parametrize(("old", "new", "fields"), [
    ({"a": 1}, {"a": 1}, ()),
    ({"a": 1}, {"a": 2}, ("a",)),
    ({"a": 1}, {}, ("a",)),
    ({}, {"b": None}, ("b",)),  # present (even as None) vs absent differs
    ({"a": [1], "b": {"x": "1"}}, {"a": [1], "b": {"x": "2"}, "c": 0}, ("b", "c")),
])
def test_changed_fields(old: dict[str, Any], new: dict[str, Any], fields: tuple[str, ...]) -> None:
    assert changed_fields(old, new) == fields


# (desired, stored, prune group) -> [(service, kind, fields, from, to)]
CASES: list[tuple[str, list[ServiceSpec], dict[ServiceName, Stored], str | None, list[tuple[Any, ...]]]] = [
    ("create", [spec("web.a", instances=3)], {}, None, [("web.a", "create", (), None, 3)]),
    ("unchanged", [spec("web.a")], stored(spec("web.a")), None, [("web.a", "unchanged", (), 1, 1)]),
    ("unchanged: defaults spelled out", [spec("web.a", instances=1, cmd=[], env={})], stored(spec("web.a")), None,
     [("web.a", "unchanged", (), 1, 1)]),
    ("scale", [spec("web.a", instances=5)], stored(spec("web.a", instances=2)), None,
     [("web.a", "scale", ("instances",), 2, 5)]),
    ("replace: image", [spec("web.a", image="nginx:1")], stored(spec("web.a")), None,
     [("web.a", "replace", ("image",), 1, 1)]),
    ("replace: fields and instances", [spec("web.a", instances=4, env={"A": "1"}, labels={"x": "y"})],
     stored(spec("web.a", instances=2)), None, [("web.a", "replace", ("env", "instances", "labels"), 2, 4)]),
    ("replace: a field removed", [spec("web.a")], stored(spec("web.a", http_host="a.example.com", http_port=80)),
     None, [("web.a", "replace", ("http_host", "http_port"), 1, 1)]),
    ("replace: the stored spec is malformed", [spec("web.a")], {n("web.a"): Stored(revision=3, problem="bad")},
     None, [("web.a", "replace", (), None, 1)]),
    ("no prune: nothing deleted", [spec("web.a")], stored(spec("web.a"), spec("old.a")), None,
     [("web.a", "unchanged", (), 1, 1)]),
    ("prune: only the group's unnamed services", [spec("web.a"), spec("web.b")],
     {**stored(spec("web.a"), spec("old.a"), spec("other.b"), spec("keep.c")),
      n("bad.a"): Stored(revision=2, problem="not JSON")}, "a",
     [("bad.a", "delete", (), None, None), ("old.a", "delete", (), 1, None), ("web.a", "unchanged", (), 1, 1),
      ("web.b", "create", (), None, 1)]),
    ("prune: the whole group", [], stored(spec("x.a", instances=2), spec("y.a")), "a",
     [("x.a", "delete", (), 2, None), ("y.a", "delete", (), 1, None)]),
    ("sorted by group then service", [spec("z.a"), spec("a.b"), spec("m.a")], {}, None,
     [("m.a", "create", (), None, 1), ("z.a", "create", (), None, 1), ("a.b", "create", (), None, 1)]),
]


@pytest.mark.parametrize(("desired", "current", "group", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_plan_apply(desired: list[ServiceSpec], current: dict[ServiceName, Stored], group: str | None,
                    expected: list[tuple[Any, ...]]) -> None:
    changes = plan_apply(desired, current, prune_group=group)
    assert [(str(c.name), c.kind, c.fields, c.instances_from, c.instances_to) for c in changes] == expected
    for c in changes:
        assert c.revision == (current[c.name].revision if c.name in current else 0)
        assert c.writes == (c.kind != "unchanged")
        assert (c.desired is None) == (c.kind == "delete")


def test_a_name_given_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"web\.a is given twice"):
        plan_apply([spec("web.a"), spec("web.a", instances=2)], {})


@pytest.mark.parametrize(("change", "line", "as_dict"), [
    (Change(name=n("web.a"), kind="create", desired=spec("web.a", instances=3), instances_to=3),
     "web.a: created (3 instance(s) of nginx:alpine)",
     {"service": "web.a", "change": "created", "from": None, "to": 3}),
    (Change(name=n("web.a"), kind="scale", fields=("instances",), instances_from=2, instances_to=5),
     "web.a: scaled 2 -> 5", {"service": "web.a", "change": "scaled", "fields": ["instances"], "from": 2, "to": 5}),
    (Change(name=n("web.a"), kind="replace", fields=("env", "image"), instances_from=1, instances_to=1),
     "web.a: replaced (env, image)", {"service": "web.a", "change": "replaced", "fields": ["env", "image"]}),
    (Change(name=n("web.a"), kind="replace", fields=("image", "instances"), instances_from=1, instances_to=2),
     "web.a: replaced (image, instances), instances 1 -> 2",
     {"service": "web.a", "change": "replaced", "fields": ["image", "instances"], "from": 1, "to": 2}),
    (Change(name=n("web.a"), kind="replace", problem="value is not JSON", instances_to=1),
     "web.a: replaced (the stored spec is invalid: value is not JSON)",
     {"service": "web.a", "change": "replaced", "fields": [], "from": None, "to": 1, "invalid": "value is not JSON"}),
    (Change(name=n("web.a"), kind="delete", instances_from=2), "web.a: deleted",
     {"service": "web.a", "change": "deleted", "from": 2, "to": None}),
    (Change(name=n("web.a"), kind="unchanged", instances_from=1, instances_to=1), "web.a: unchanged",
     {"service": "web.a", "change": "unchanged"}),
])
def test_change_line_and_dict(change: Change, line: str, as_dict: dict[str, Any]) -> None:
    assert change.line() == line
    assert change.to_dict() == as_dict


def test_summary_counts_every_kind() -> None:
    changes = plan_apply([spec("a.g"), spec("b.g", instances=2), spec("c.g")],
                         stored(spec("b.g"), spec("c.g"), spec("d.g")), prune_group="g")
    assert summary(changes) == "1 created, 1 scaled, 0 replaced, 1 deleted, 1 unchanged"
