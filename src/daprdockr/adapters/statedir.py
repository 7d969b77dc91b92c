"""The agent's private state directory, and files written into it safely.

The agent runs as root, so a directory another local user can write to (or swap) is a way to
make root overwrite any file, or to feed nginx a config of their choosing.  Hence:

* the default is ``/var/lib/daprdockr`` for root and ``$XDG_STATE_HOME/daprdockr`` (default
  ``~/.local/state/daprdockr``) for anyone else, never a shared directory such as ``/tmp``;
* :func:`prepare_state_dir` creates the directory with mode 0700, and refuses one that is a
  symlink, not owned by the agent's user, or writable by group or others, or that sits under a
  directory others can write to without the sticky bit, or under one that belongs to another
  user than root or the agent's (they could rename it away and put their own in its place), with
  a one-line error naming the path and the reason;
* :func:`api_token` reads the agent API's bearer token from a given file, or from
  ``<state dir>/api-token``, generating it there (0600) on first start.
* :func:`write_private` writes a file as a fresh temp file (``O_CREAT | O_EXCL | O_NOFOLLOW``,
  mode 0600 by default) in the same directory and renames it over the target: a symlink planted
  at either name is never followed, and readers see the old or the new file, never half of one.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from daprdockr.errors import ValidationError


def default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/daprdockr")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "daprdockr"


def _refuse(path: Path, why: str) -> ValidationError:
    return ValidationError(f"state dir {path}: {why}; refusing it (the agent writes files there as "
                           f"uid {os.geteuid()})", field="state dir")


def _check_ancestors(path: Path) -> None:
    for parent in path.parents:
        try:
            st = parent.stat()
        except OSError:
            continue
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            raise _refuse(path, f"its parent {parent} is writable by others without the sticky bit")
        if st.st_uid not in (0, os.geteuid()):
            raise _refuse(path, f"its parent {parent} belongs to uid {st.st_uid}, who could swap it")


def prepare_state_dir(path: Path) -> Path:
    """Create (0700) or check ``path``; returns it absolute.  Raises ValidationError if unsafe."""
    path = Path(os.path.abspath(path))
    _check_ancestors(path)
    try:
        st = path.lstat()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass  # created meanwhile: checked below like any existing directory
        except OSError as exc:
            raise _refuse(path, f"cannot create it: {exc.strerror}") from exc
        st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, "it is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "it is not a directory")
    if st.st_uid != os.geteuid():
        raise _refuse(path, f"it is owned by uid {st.st_uid}, not by this agent's user")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _refuse(path, f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700, follow_symlinks=False)
    return path


TOKEN_FILE = "api-token"


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ValidationError(f"cannot read the API token file {path}: {exc.strerror}", field="api token") from exc
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ValidationError(f"{path} holds no usable token (16 or more characters, no spaces)", field="api token")
    return token


def api_token(state_dir: Path, given: Path | None) -> str:
    """The API token: from ``given``, else ``<state_dir>/api-token`` (created on first start)."""
    if given is not None:
        return read_token(given)
    path = state_dir / TOKEN_FILE
    if not path.exists():
        write_private(path, secrets.token_urlsafe(32) + "\n")
    return read_token(path)


def write_private(path: Path, data: str | bytes, *, mode: int = 0o600) -> None:
    """Atomically replace ``path`` with ``data`` without following any symlink."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
