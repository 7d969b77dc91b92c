"""``daprdockr cert set / ls / get / del``: the TLS certificates every agent's nginx serves by SNI,
kept in etcd under ``<prefix>-tls/certs/`` (:mod:`daprdockr.core.tls_keys`).

``set`` checks the pair before anything is written (the key matches the certificate, the chain
parses and is in order, valid now, a name covers the host): bad input is one line on stderr,
exit 2, and etcd is not touched.  ``ls`` lists what is stored, malformed values included (as
``invalid``, never breaking the listing), and ACME orders of hosts still without a certificate.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.tls_store import TlsStore
from daprdockr.cli.app import app, fail, with_store
from daprdockr.clikit.output import print_json, print_table, safe_text
from daprdockr.core.tls import MAX_CHAIN_BYTES, MAX_KEY_BYTES, CertRecord, validate_cert_host
from daprdockr.core.tls_state import TlsState
from daprdockr.errors import NotFoundError, ValidationError

cert_app = typer.Typer(help="Manage TLS certificates (served by SNI by every agent's nginx).", no_args_is_help=True)
app.add_typer(cert_app, name="cert")

HostArg = Annotated[str, typer.Argument(help="Host name, or a wildcard such as '*.example.com' (quote it).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON output.")]
LS_COLUMNS = ("host", "source", "issuer", "not_after", "fingerprint", "status")


def _host(text: str) -> str:
    try:
        return validate_cert_host(text, field="host")
    except ValidationError as exc:
        raise fail(exc) from None


def read_pem(path: Path, *, flag: str, limit: int) -> str:
    """The text of a PEM file of at most ``limit`` bytes; ValidationError naming ``flag`` otherwise."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror or exc}", field=flag) from None
    if len(data) > limit:
        raise ValidationError(f"{path} is over {limit} bytes: not a certificate chain or key of a TLS server",
                              field=flag)
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise ValidationError(f"{path} is not PEM text (binary data; DER? convert it with openssl)",
                              field=flag) from None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(rec: CertRecord, now: float) -> str:
    if now >= rec.info.not_after:
        return "expired"
    if now < rec.info.not_before:
        return "not yet valid"
    return f"ok, {int((rec.info.not_after - now) // 86400)} days left"


@cert_app.command("set")
def cert_set(
    ctx: typer.Context,
    host: HostArg,
    cert: Annotated[Path, typer.Option("--cert", help="The certificate chain (PEM): the host's first, then "
                                                       "its intermediates.")],
    key: Annotated[Path, typer.Option("--key", help="Its private key (PEM, unencrypted).")],
    as_json: JsonOpt = False,
) -> None:
    """Store HOST's certificate and key; every agent serves it within a second, without a reload.
    The pair is checked first; a bad pair is refused (exit 2) and nothing is written.
    Example: daprdockr cert set www.example.com --cert fullchain.pem --key privkey.pem"""
    try:
        name = validate_cert_host(host, field="host")
        cert_pem = read_pem(cert, flag="--cert", limit=MAX_CHAIN_BYTES)
        key_pem = read_pem(key, flag="--key", limit=MAX_KEY_BYTES)
        rec = CertRecord.make(host=name, cert_pem=cert_pem, key_pem=key_pem, source="manual", now=time.time())
    except ValidationError as exc:
        raise fail(exc) from None

    async def put(store: EtcdStore) -> None:
        await TlsStore(store=store).put_cert(rec)

    with_store(ctx, put)
    if as_json:
        print_json(rec.summary())
    else:
        print(f"{rec.host}: certificate set ({', '.join(rec.info.names)}; not after {_iso(rec.info.not_after)})",
              file=sys.stderr)


def ls_rows(state: TlsState, *, prefix: str, now: float) -> list[dict[str, Any]]:
    """One row per stored certificate, per malformed certificate value, and per ACME order of a
    host without a certificate, sorted by host."""
    rows: list[dict[str, Any]] = []
    for host, rec in state.certs.items():
        order = state.orders.get(host)
        rows.append({**rec.summary(), "not_after": _iso(rec.info.not_after), "not_before": _iso(rec.info.not_before),
                     "status": _status(rec, now), "order": None if order is None else order.to_dict()})
    certs_prefix = prefix
    for key, reason in state.bad.items():
        if key.startswith(certs_prefix):
            rows.append({"host": key[len(certs_prefix):], "status": "invalid", "invalid": reason})
    for host, order in state.orders.items():
        if host not in state.certs:
            text = order.state + (f" ({order.failures} failures)" if order.failures else "")
            if order.last_error:
                text += f": {order.last_error}"
            if order.state == "failed" and order.next_try:
                text += f"; next try {_iso(order.next_try)}"
            rows.append({"host": host, "source": "acme", "status": text, "order": order.to_dict()})
    return sorted(rows, key=lambda row: (str(row["host"]), "invalid" in row))


@cert_app.command("ls")
def cert_ls(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the stored certificates (host, source manual/acme, issuer, expiry, fingerprint), malformed
    values as 'invalid', and ACME orders of hosts still without one.   Example: daprdockr cert ls"""

    async def read(store: EtcdStore) -> list[dict[str, Any]]:
        tls = TlsStore(store=store)
        state, _ = await tls.read_certs()
        return ls_rows(state, prefix=tls.schema.certs_prefix, now=time.time())

    rows = with_store(ctx, read)
    if as_json:
        print_json(rows)
    else:
        print_table([{**row, "fingerprint": str(row.get("fingerprint", ""))[:16],
                      "status": row["status"] + (f": {row['invalid']}" if "invalid" in row else "")}
                     for row in rows], LS_COLUMNS)


@cert_app.command("get")
def cert_get(
    ctx: typer.Context,
    host: HostArg,
    show_key: Annotated[bool, typer.Option("--show-key", help="Print the private key too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print HOST's certificate: what it says, then the chain (PEM); the key only with --show-key.
    Example: daprdockr cert get www.example.com"""
    name = _host(host)

    async def get(store: EtcdStore) -> CertRecord:
        rec = await TlsStore(store=store).get_cert(name)
        if rec is None:
            raise NotFoundError(f"no certificate for {name}")
        return rec

    rec = with_store(ctx, get)
    out = {**rec.summary(), "cert": rec.cert_pem, **({"key": rec.key_pem} if show_key else {})}
    if as_json:
        print_json(out)
        return
    for field in ("host", "source", "names", "issuer", "serial", "fingerprint", "not_before", "not_after", "set_at"):
        value = out[field]
        text = ", ".join(value) if field == "names" else _iso(value) if isinstance(value, float) else str(value)
        print(f"{field}: {safe_text(text)}")
    print(f"status: {_status(rec, time.time())}")
    sys.stdout.write(rec.cert_pem if rec.cert_pem.endswith("\n") else rec.cert_pem + "\n")
    if show_key:
        sys.stdout.write(rec.key_pem if rec.key_pem.endswith("\n") else rec.key_pem + "\n")


@cert_app.command("del")
def cert_del(ctx: typer.Context, host: HostArg, as_json: JsonOpt = False) -> None:
    """Delete HOST's certificate (a malformed stored value too); agents fall back to a wildcard or
    their default certificate.   Example: daprdockr cert del www.example.com"""
    name = _host(host)

    async def delete(store: EtcdStore) -> None:
        if not await TlsStore(store=store).delete_cert(name):
            raise NotFoundError(f"no certificate for {name}")

    with_store(ctx, delete)
    if as_json:
        print_json({"host": name, "deleted": True})
    else:
        print(f"{name}: certificate deleted", file=sys.stderr)
