"""Which hosts need an ACME order, renewal at 2/3 of the lifetime, the capped backoff of failures."""

from __future__ import annotations

import pytest

from daprdockr.core.acme_plan import (
    DEFAULT_RETRY,
    HeldCert,
    Need,
    OrderStatus,
    after_failure,
    due,
    needs,
    renew_at,
    wanted_hosts,
)
from daprdockr.core.backoff import Backoff

DAY = 86_400.0


def acme(not_before: float, not_after: float) -> HeldCert:
    return HeldCert(source="acme", not_before=not_before, not_after=not_after)


def manual(not_before: float, not_after: float) -> HeldCert:
    return HeldCert(source="manual", not_before=not_before, not_after=not_after)


@pytest.mark.parametrize(("services", "wanted"), [
    ([], set()),
    ([("a.example.com", True)], {"a.example.com"}),
    ([("a.example.com", False)], set()),  # https off: plain HTTP only
    ([(None, True)], set()),
    ([("A.Example.COM", True)], {"a.example.com"}),  # names are lower-cased
    ([("*.example.com", True)], set()),  # HTTP-01 cannot prove a wildcard
    ([("a.test", True), ("a.test", False), ("b.test", True)], {"a.test", "b.test"}),
])
def test_wanted_hosts(services: list[tuple[str | None, bool]], wanted: set[str]) -> None:
    assert wanted_hosts(services) == wanted


@pytest.mark.parametrize(("not_before", "not_after", "at"), [
    (0.0, 90 * DAY, 60 * DAY),  # Let's Encrypt's 90 days: renewed after 60
    (1000.0, 1120.0, 1080.0),  # pebble with a 120 s validity
    (5.0, 5.0, 5.0),
])
def test_renewal_starts_at_two_thirds_of_the_lifetime(not_before: float, not_after: float, at: float) -> None:
    assert renew_at(not_before=not_before, not_after=not_after) == pytest.approx(at)


NOW = 100 * DAY


@pytest.mark.parametrize(("certs", "expected"), [
    ({}, [Need(host="a.test", reason="missing"), Need(host="b.test", reason="missing")]),
    ({"a.test": acme(NOW - DAY, NOW + 89 * DAY)}, [Need(host="b.test", reason="missing")]),  # fresh: kept
    ({"a.test": acme(NOW - 61 * DAY, NOW + 29 * DAY), "b.test": acme(NOW, NOW + 90 * DAY)},
     [Need(host="a.test", reason="renew")]),  # past 2/3 of 90 days
    ({"a.test": acme(NOW - 60 * DAY, NOW + 30 * DAY), "b.test": acme(NOW, NOW + 90 * DAY)},
     [Need(host="a.test", reason="renew")]),  # exactly at 2/3
    ({"a.test": acme(NOW - 2 * DAY, NOW - DAY), "b.test": acme(NOW, NOW + 90 * DAY)},
     [Need(host="a.test", reason="renew")]),  # expired
    ({"a.test": manual(NOW - 2 * DAY, NOW - DAY), "b.test": manual(NOW, NOW + DAY)}, []),  # the operator's
    ({"*.test": manual(NOW, NOW + 90 * DAY)}, []),  # a manual wildcard covers both
    ({"*.test": acme(NOW - 80 * DAY, NOW + 10 * DAY)}, []),  # (never ours: not renewed for the name)
])
def test_which_wanted_hosts_need_an_order(certs: dict[str, HeldCert], expected: list[Need]) -> None:
    assert needs(wanted={"b.test", "a.test"}, certs=certs, now=NOW) == expected


A, B, C = (Need(host=h, reason="missing") for h in ("a.test", "b.test", "c.test"))


@pytest.mark.parametrize(("orders", "locked", "expected"), [
    ({}, set(), [A, B, C]),
    ({}, {"b.test"}, [A, C]),  # another agent orders b
    ({"a.test": OrderStatus(failures=2, next_try=NOW + 1)}, set(), [B, C]),  # backing off
    ({"a.test": OrderStatus(failures=2, next_try=NOW)}, set(), [A, B, C]),  # its time came
    ({"a.test": OrderStatus(failures=0, next_try=0.0)}, {"c.test"}, [A, B]),
])
def test_which_needed_orders_are_due(orders: dict[str, OrderStatus], locked: set[str], expected: list[Need]) -> None:
    assert due([A, B, C], orders=orders, locked=locked, now=NOW) == expected


@pytest.mark.parametrize(("previous", "failures", "wait"), [
    (0, 1, 60.0),
    (1, 2, 120.0),
    (2, 3, 240.0),
    (8, 9, 15_360.0),  # 60 * 2**8
    (9, 10, 6 * 3600.0),  # 60 * 2**9 = 30720 s > the cap
    (50, 51, 6 * 3600.0),
    (-3, 1, 60.0),  # (a bad stored count starts over)
])
def test_failures_back_off_exponentially_with_a_cap(previous: int, failures: int, wait: float) -> None:
    status = after_failure(previous, now=NOW)
    assert status == OrderStatus(failures=failures, next_try=NOW + wait)
    assert wait <= DEFAULT_RETRY.max_delay


def test_the_backoff_is_configurable() -> None:
    assert after_failure(2, now=0.0, retry=Backoff(base=0.5, factor=2.0, max_delay=1.0)).next_try == 1.0
