"""etcd TLS and auth settings from command-line options and the environment.

Shared by ``daprdockr`` (``--etcd-cacert/--etcd-cert/--etcd-key/--etcd-user/--etcd-password-file``)
and the seed-style ``daprdockrcmd``/``daprdockrd`` (the same names with one dash).  Every option
also reads ``DAPRDOCKR_ETCD_CACERT``, ``..._CERT``, ``..._KEY``, ``..._USER`` and
``..._PASSWORD_FILE``.  The password itself is never an option (a flag is visible to every user in
``ps``): it comes from the password file or from ``DAPRDOCKR_ETCD_PASSWORD``.
"""

from __future__ import annotations

import os
from pathlib import Path

from daprdockr.core.endpoints import EtcdSecurity
from daprdockr.errors import ValidationError

ENV = {
    "cacert": "DAPRDOCKR_ETCD_CACERT", "cert": "DAPRDOCKR_ETCD_CERT", "key": "DAPRDOCKR_ETCD_KEY",
    "user": "DAPRDOCKR_ETCD_USER", "password_file": "DAPRDOCKR_ETCD_PASSWORD_FILE",
}
PASSWORD_ENV = "DAPRDOCKR_ETCD_PASSWORD"


def _file(value: str | Path | None, *, flag: str) -> Path | None:
    if value in (None, ""):
        return None
    path = Path(str(value))
    if not path.is_file():
        raise ValidationError(f"{path}: no such file", field=flag)
    return path


def etcd_security(
    *, cacert: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None,
    user: str | None = None, password_file: str | Path | None = None,
) -> EtcdSecurity | None:
    """The settings given (falling back to the environment), or ``None`` when there are none."""
    cacert = cacert or os.environ.get(ENV["cacert"])
    cert = cert or os.environ.get(ENV["cert"])
    key = key or os.environ.get(ENV["key"])
    user = user or os.environ.get(ENV["user"]) or None
    password_file = password_file or os.environ.get(ENV["password_file"])
    password: str | None = None
    pw_path = _file(password_file, flag="--etcd-password-file")
    if pw_path is not None:
        password = pw_path.read_text().rstrip("\r\n")
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    if not any((cacert, cert, key, user, password)):
        return None
    return EtcdSecurity(cacert=_file(cacert, flag="--etcd-cacert"), cert=_file(cert, flag="--etcd-cert"),
                        key=_file(key, flag="--etcd-key"), user=user, password=password)
