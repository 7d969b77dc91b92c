"""Property tests: this node's containers and its local view, kept per service, equal a fresh build.

:class:`LocalContainers` built by :meth:`~LocalContainers.put` and :meth:`~LocalContainers.filtered`
(with the last result to share) holds what a fresh listing holds, and shares the tuple of every
service that did not change; :class:`LocalView`, fed the mirror's states and a routable set that
changes as the reconciler's does (starts, stops, new listings), answers what :func:`local_view`
answers from scratch.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from daprdockr.core.containers import ContainerInfo, LocalContainers
from daprdockr.core.keys import KeySchema
from daprdockr.core.local_view import LocalView, local_view
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.names import ServiceName

SCHEMA = KeySchema("/dd")
SERVICES = [ServiceName.parse(n) for n in ("web.a", "api.a", "web.b")]
IDS = [f"c{i}" for i in range(8)]


def _container(cid: str, service: ServiceName, number: int, *, running: bool = True, port: int = 31000,
               paused: bool = False) -> ContainerInfo:
    return ContainerInfo(id=cid, service=service, number=number, node="n1", spec_hash="h", running=running,
                         ports=(("80/tcp", port),), created=float(IDS.index(cid)), paused=paused)


CONTAINER = st.builds(_container, st.sampled_from(IDS), st.sampled_from(SERVICES), st.integers(1, 3),
                      running=st.booleans(), port=st.integers(31000, 31003), paused=st.booleans())


def _fresh(containers: dict[str, ContainerInfo]) -> dict[ServiceName, set[ContainerInfo]]:
    out: dict[ServiceName, set[ContainerInfo]] = {}
    for c in containers.values():
        out.setdefault(c.service, set()).add(c)
    return out


def _groups(local: LocalContainers) -> dict[ServiceName, set[ContainerInfo]]:
    return {name: set(group) for name, group in local.by_service.items()}


def test_put_replaces_by_id_and_shares_the_other_services() -> None:
    a, b = _container("c0", SERVICES[0], 1), _container("c1", SERVICES[1], 1)
    first = LocalContainers([a, b])
    moved = _container("c0", SERVICES[0], 1, port=31001)
    second = first.put(moved)
    assert list(second.by_service[SERVICES[0]]) == [moved] and second.by_id["c0"] is moved
    assert second.by_service[SERVICES[1]] is first.by_service[SERVICES[1]]  # untouched: the same tuple
    assert len(second) == 2 and second != first and LocalContainers([moved, b]) == second


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("put"), CONTAINER),
    st.tuples(st.just("relist"), st.lists(CONTAINER, max_size=6)),
    st.tuples(st.just("stop"), st.sampled_from(IDS)),
    st.tuples(st.just("stopped"), st.sampled_from(IDS)),
), max_size=40))
def test_incremental_containers_equal_a_fresh_listing(ops: list[tuple[str, object]]) -> None:
    """Starts (put), new listings, and the stopping set changing: the containers, the routable
    selection (as the reconciler keeps it) and their sharing match a fresh build."""
    truth: dict[str, ContainerInfo] = {}
    local = LocalContainers()
    stopping: dict[str, ServiceName] = {}
    last: tuple[LocalContainers, dict[str, ServiceName], LocalContainers] | None = None
    for kind, arg in ops:
        if kind == "put":
            assert isinstance(arg, ContainerInfo)
            if arg.id in truth and truth[arg.id].service != arg.service:
                continue  # (a container's service never changes)
            truth[arg.id] = arg
            local = local.put(arg)
        elif kind == "relist":
            assert isinstance(arg, list)
            truth = {}
            for c in arg:
                truth.setdefault(c.id, c)
            fresh = LocalContainers(truth.values(), like=local)
            for name, group in fresh.by_service.items():  # an equal group is the earlier tuple
                if local.by_service.get(name) == group:
                    assert group is local.by_service[name]
            local = fresh
        elif kind == "stop" and isinstance(arg, str) and arg in truth:
            stopping[arg] = truth[arg].service
        elif kind == "stopped" and isinstance(arg, str):
            stopping.pop(arg, None)
        assert _groups(local) == _fresh(truth) and len(local) == len(truth)
        assert dict(local.by_id) == truth and set(local) == set(truth.values())
        # the routable selection, as Reconciler.routable keeps it
        touched = {name for _, name in stopping.items() ^ last[1].items()} if last else set()
        now = dict(stopping)
        routable = local.filtered(lambda c, now=now: c.serving and c.id not in now,  # type: ignore[misc]
                                  since=last and (last[0], last[2]), touched=touched)
        expected = {c for c in truth.values() if c.serving and c.id not in stopping}
        assert set(routable) == expected
        if last is not None:
            for name, group in routable.by_service.items():
                if last[2].by_service.get(name) == group:
                    assert group is last[2].by_service[name]  # unchanged: shared, so consumers skip it
        last = (local, now, routable)


def _record(node: str, state: str, cid: str, port: int) -> bytes:
    return json.dumps({"node": node, "address": "127.0.0.11", "state": state, "container_id": cid,
                       "ports": {"80/tcp": port}}).encode()


RECORD_EVENT = st.tuples(st.just("record"), st.sampled_from(SERVICES), st.integers(1, 3),
                         st.sampled_from(["n1", "n2"]), st.sampled_from(["running", "starting"]),
                         st.sampled_from(IDS), st.integers(31000, 31003))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(
    RECORD_EVENT,
    st.tuples(st.just("delete"), st.sampled_from(SERVICES), st.integers(1, 3)),
    st.tuples(st.just("start"), CONTAINER),
    st.tuples(st.just("relist"), st.lists(CONTAINER, max_size=6)),
    st.tuples(st.just("resync")),
), max_size=40))
def test_local_view_kept_per_service_equals_a_fresh_one(ops: list[tuple[object, ...]]) -> None:
    mirror = StateMirror(schema=SCHEMA)
    mirror.reset([], revision=1)
    view = LocalView(node_id="n1")
    truth: dict[str, ContainerInfo] = {}
    local = LocalContainers()
    last: tuple[LocalContainers, LocalContainers] | None = None
    for revision, op in enumerate(ops, start=2):
        kind = op[0]
        if kind == "record":
            _, name, number, node, state, cid, port = op
            assert isinstance(name, ServiceName) and isinstance(number, int)
            mirror.apply(WatchEvent(kind="put", key=SCHEMA.instance(name, number), revision=revision, lease=7,
                                    value=_record(str(node), str(state), str(cid), int(str(port)))))
        elif kind == "delete":
            name, number = op[1], op[2]
            assert isinstance(name, ServiceName) and isinstance(number, int)
            mirror.apply(WatchEvent(kind="delete", key=SCHEMA.instance(name, number), revision=revision))
        elif kind == "resync":
            mirror.reset(list(mirror._kvs.values()), revision=revision)
        elif kind == "start":
            c = op[1]
            assert isinstance(c, ContainerInfo)
            if c.id in truth and truth[c.id].service != c.service:
                continue
            truth[c.id] = c
            local = local.put(c)
        elif kind == "relist":
            listing = op[1]
            assert isinstance(listing, list)
            truth = {}
            for c in listing:
                truth.setdefault(c.id, c)
            local = LocalContainers(truth.values(), like=local)
        routable = local.filtered(lambda c: c.serving, since=last)
        last = (local, routable)
        state = mirror.state()
        kept = view.view(state, routable=routable)
        fresh = local_view(state, node_id="n1", routable=list(routable))
        assert dict(kept.instances) == dict(fresh.instances)
