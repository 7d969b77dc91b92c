"""core/tls_keys.py and core/tls_state.py: the TLS key schema, and the state kept per watch event
equal to a fresh decode of the same keys (property test), malformed values kept aside with
their reason without hiding the good ones, states handed out earlier never changed."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daprdockr.core.acme_records import AcmeAccount, AcmeChallenge, AcmeOrder
from daprdockr.core.mirror import WatchEvent
from daprdockr.core.state import RawKV
from daprdockr.core.tls import CertRecord
from daprdockr.core.tls_keys import ParsedTlsKey, TlsSchema
from daprdockr.core.tls_state import TlsState, apply_event, decode_tls
from daprdockr.errors import ValidationError
from tests.support.tlsgen import issue, make_ca

SCHEMA = TlsSchema("/dd")
NOW = time.time()
CA = make_ca()
HOSTS = ["a.example.com", "*.example.com", "b.example.org"]
CERTS = {h: CertRecord.make(host=h, cert_pem=(i := issue([h], ca=CA)).cert_pem, key_pem=i.key_pem,
                            source="manual", now=NOW) for h in HOSTS}
TOKENS = ["tok1", "Tok_2-x"]


def test_schema_keys() -> None:
    s = TlsSchema("/daprdockr")
    assert s.root == "/daprdockr-tls/"
    assert s.cert("*.example.com") == "/daprdockr-tls/certs/*.example.com"
    assert s.certs_prefix == "/daprdockr-tls/certs/"
    assert s.account == "/daprdockr-tls/acme/account"
    assert s.lock("a.b") == "/daprdockr-tls/acme/locks/a.b"
    assert s.order("a.b") == "/daprdockr-tls/acme/orders/a.b"
    assert s.challenge("tok") == "/daprdockr-tls/acme/challenges/tok"
    assert s.challenges_prefix == "/daprdockr-tls/acme/challenges/"
    with pytest.raises(ValidationError):
        TlsSchema("nope/")


@pytest.mark.parametrize(("key", "expected"), [
    ("/dd-tls/certs/a.example.com", ParsedTlsKey("cert", "a.example.com")),
    ("/dd-tls/certs/*.example.com", ParsedTlsKey("cert", "*.example.com")),
    ("/dd-tls/acme/account", ParsedTlsKey("account")),
    ("/dd-tls/acme/locks/a.example.com", ParsedTlsKey("lock", "a.example.com")),
    ("/dd-tls/acme/orders/*.example.com", ParsedTlsKey("order", "*.example.com")),
    ("/dd-tls/acme/challenges/abc_-D9", ParsedTlsKey("challenge", "abc_-D9")),
    ("/dd-tls/certs/A.example.com", None),  # not written as the schema writes it
    ("/dd-tls/certs/a.example.com.", None),
    ("/dd-tls/certs/", None),
    ("/dd-tls/certs/a/b", None),
    ("/dd-tls/certs/*.com", None),
    ("/dd-tls/acme/challenges/a.b", None),
    ("/dd-tls/acme/challenges/", None),
    ("/dd-tls/acme/other/x", None),
    ("/dd-tls/acme/account/x", None),
    ("/dd/services/a/b", None),
    ("/dd-tlsx/certs/a.example.com", None),
    ("/dd-tls/", None),
])
def test_schema_parse(key: str, expected: ParsedTlsKey | None) -> None:
    assert SCHEMA.parse(key) == expected


def _account() -> bytes:
    acc = AcmeAccount(directory="https://ca/dir", email="a@b", key='{"kty":"EC"}', uri="")
    return json.dumps(acc.to_dict()).encode()


def _order(failures: int) -> bytes:
    return json.dumps(AcmeOrder(node="n1", state="failed", failures=failures, last_error="boom",
                                next_try=NOW + 60, updated=NOW).to_dict()).encode()


GARBAGE = st.sampled_from([b"{", b"[]", b'"x"', b"\xff", b'{"host": "a.example.com"}', b"A" * 70000])


@st.composite
def puts(draw: st.DrawFn) -> tuple[str, bytes, int]:
    kind = draw(st.sampled_from(["cert", "cert", "challenge", "lock", "order", "account", "stray"]))
    good = draw(st.booleans()) or draw(st.booleans())
    host = draw(st.sampled_from(HOSTS))
    token = draw(st.sampled_from(TOKENS))
    lease = draw(st.sampled_from([0, 7]))
    if kind == "cert":
        other = draw(st.sampled_from(HOSTS))  # (a record stored under another host's key is malformed)
        key, value = SCHEMA.cert(host), json.dumps(CERTS[other].to_dict()).encode()
    elif kind == "challenge":
        key = SCHEMA.challenge(token)
        value = json.dumps({"host": host, "authorization": f"{draw(st.sampled_from([token, 'x']))}.thumb"}).encode()
    elif kind == "lock":
        key, value = SCHEMA.lock(host), json.dumps({"node": draw(st.sampled_from(["n1", "n2"])), "since": 1}).encode()
    elif kind == "order":
        key, value = SCHEMA.order(host), _order(draw(st.integers(0, 3)))
    elif kind == "account":
        key, value = SCHEMA.account, _account()
    else:
        key, value = draw(st.sampled_from(["/dd-tls/junk", "/dd-tls/certs/UPPER.com"])), b"{}"
    return key, (value if good else draw(GARBAGE)), lease


EVENTS = st.lists(st.one_of(
    puts().map(lambda p: ("put", *p)),
    st.sampled_from([SCHEMA.cert(h) for h in HOSTS] + [SCHEMA.account, SCHEMA.lock(HOSTS[0]), "/dd-tls/junk",
                     SCHEMA.challenge(TOKENS[0])]).map(lambda k: ("delete", k, b"", 0)),
    st.just(("resync", "", b"", 0)),
), max_size=30)


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_incremental_equals_fresh_decode(events: list[tuple[str, str, bytes, int]]) -> None:
    kvs: dict[str, RawKV] = {}
    state = decode_tls(SCHEMA, [])
    seen: list[tuple[TlsState, TlsState]] = []
    for revision, (kind, key, value, lease) in enumerate(events, start=1):
        event = WatchEvent(kind=kind, key=key, value=value, revision=revision, lease=lease,  # type: ignore[arg-type]
                           create_revision=revision)
        seen.append((state, decode_tls(SCHEMA, list(kvs.values()), revision=state.revision)))
        if kind == "put":
            kvs[key] = event.as_kv()
        elif kind == "delete":
            kvs.pop(key, None)
        state = apply_event(state, SCHEMA, event)
        assert state == decode_tls(SCHEMA, list(kvs.values()), revision=state.revision)
    for earlier, copy in seen:  # copy on write: states handed out earlier are unchanged
        assert earlier == copy


def test_bad_values_kept_aside_and_good_ones_still_decoded() -> None:
    kvs = [
        RawKV(key=SCHEMA.cert("a.example.com"), value=json.dumps(CERTS["a.example.com"].to_dict()).encode()),
        RawKV(key=SCHEMA.cert("*.example.com"), value=b"{nope"),
        RawKV(key=SCHEMA.cert("b.example.org"), value=json.dumps(CERTS["a.example.com"].to_dict()).encode()),
        RawKV(key=SCHEMA.challenge("tok1"), value=b'{"host": "a.example.com", "authorization": "tok1.th-umb"}'),
        RawKV(key=SCHEMA.challenge("tok2"), value=b'{"host": "a.example.com", "authorization": "tok1.thumb"}'),
        RawKV(key=SCHEMA.lock("a.example.com"), value=b'{"node": "n1", "since": 5}', lease=9),
        RawKV(key=SCHEMA.order("a.example.com"), value=_order(2)),
        RawKV(key=SCHEMA.account, value=_account()),
        RawKV(key="/dd-tls/what", value=b"{}"),
    ]
    state = decode_tls(SCHEMA, kvs, revision=12)
    assert list(state.certs) == ["a.example.com"] and state.certs["a.example.com"] == CERTS["a.example.com"]
    assert dict(state.challenges) == {"tok1": "tok1.th-umb"}
    assert dict(state.locks) == {"a.example.com": "n1"}
    assert state.orders["a.example.com"].failures == 2
    assert state.account is not None and state.account.directory == "https://ca/dir"
    assert state.revision == 12
    assert set(state.bad) == {SCHEMA.cert("*.example.com"), SCHEMA.cert("b.example.org"), SCHEMA.challenge("tok2"),
                              "/dd-tls/what"}
    assert "not JSON" in state.bad[SCHEMA.cert("*.example.com")]
    assert state.bad[SCHEMA.cert("b.example.org")] == "host: record names 'a.example.com', its key 'b.example.org'"
    assert "authorization" in state.bad[SCHEMA.challenge("tok2")]


@pytest.mark.parametrize(("data", "message"), [
    ({"host": "a.b.c", "authorization": "t.x y"}, "authorization: must be '<token>.<thumbprint>'"),
    ({"host": "a.b.c", "authorization": "t."}, "authorization: must be '<token>.<thumbprint>'"),
    ({"host": "a b", "authorization": "t.x"}, "host:"),
    ({"authorization": "t.x"}, "host:"),
])
def test_challenge_checks(data: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("*", r"\*").replace(".", r"\.")):
        AcmeChallenge.from_dict(data, token="t")


@pytest.mark.parametrize(("data", "message"), [
    ({"node": "n1", "state": "done"}, "state: 'done' is not one of failed, ordering, valid"),
    ({"node": "n1", "state": "failed", "failures": -1}, "failures: must be a non-negative integer"),
    ({"node": "n1", "state": "failed", "next_try": "soon"}, "next_try: must be a number"),
    ({"state": "failed"}, "node: must be a non-empty string"),
])
def test_order_checks(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        AcmeOrder.from_dict(data)
    assert str(err.value) == message
