"""A real local image registry for tests: Debian's ``docker-registry`` (distribution v2).

No public registry is reachable here, so tests run one on a free loopback port (Docker allows
plain HTTP to registries on 127.0.0.0/8), optionally behind an htpasswd login (bcrypt, which
distribution requires: Python's ``crypt`` module, else ``htpasswd -B`` from apache2-utils).
Its log (with an access log line per request) is kept in the temp dir.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import missing
from tests.support.procs import free_port, terminate, wait_port


@dataclass(frozen=True)
class Registry:
    addr: str  # 127.0.0.1:<port>
    log: Path

    def requests(self) -> int:
        """How many requests the registry answered so far (its access log's lines)."""
        return sum(1 for line in self.log.read_text(errors="replace").splitlines()
                   if line.startswith("127.0.0.1 - ") and '" HTTP/1.1" ' in line)


def bcrypt_line(user: str, password: str) -> str:
    """An htpasswd line with a bcrypt hash."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # (deprecated, gone in Python 3.13: htpasswd then)
        except ImportError:
            crypt = None  # type: ignore[assignment]
    if crypt is not None and crypt.METHOD_BLOWFISH in crypt.methods:
        return f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}"
    if shutil.which("htpasswd"):
        return subprocess.run(["htpasswd", "-nbB", user, password], capture_output=True, text=True,
                              check=True).stdout.strip()
    missing("bcrypt (python's crypt module or htpasswd from apache2-utils)")
    raise AssertionError("unreachable")


@contextlib.contextmanager
def registry(tmp: Path, *, login: tuple[str, str] | None = None) -> Iterator[Registry]:
    binary = shutil.which("docker-registry")
    if binary is None:
        missing("docker-registry")
        raise AssertionError("unreachable")
    port = free_port()
    auth = ""
    if login is not None:
        (tmp / "htpasswd").write_text(bcrypt_line(*login) + "\n")
        auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {tmp / 'htpasswd'}\n"
    config = tmp / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {tmp / 'data'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n{auth}")
    log = tmp / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port("127.0.0.1", port, proc=proc, log=log)
        yield Registry(addr=f"127.0.0.1:{port}", log=log)
    finally:
        terminate(proc, grace=10)
