"""The agent's state directory refuses what another local user could tamper with (real files)."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from daprdockr.adapters.statedir import default_state_dir, prepare_state_dir, write_private
from daprdockr.errors import ValidationError

NOBODY = pwd.getpwnam("nobody").pw_uid


def test_created_private(tmp_path: Path) -> None:
    path = prepare_state_dir(tmp_path / "a" / "state")
    assert stat.S_IMODE(path.stat().st_mode) == 0o700 and path.stat().st_uid == os.geteuid()


def test_a_dir_owned_by_someone_else_is_refused(root: None, tmp_path: Path) -> None:
    hostile = tmp_path / "state"
    hostile.mkdir()
    os.chown(hostile, NOBODY, -1)
    with pytest.raises(ValidationError, match=f"state dir {hostile}: it is owned by uid {NOBODY}"):
        prepare_state_dir(hostile)


def test_writable_by_others_or_a_symlink_is_refused(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(ValidationError, match="writable by group or others"):
        prepare_state_dir(open_dir)
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(ValidationError, match="symlink"):
        prepare_state_dir(link)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # world-writable, no sticky bit: the state dir inside could be renamed away
    with pytest.raises(ValidationError, match="without the sticky bit"):
        prepare_state_dir(shared / "state")


def test_write_private_never_follows_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "nginx.conf").symlink_to(victim)
    write_private(tmp_path / "nginx.conf", "new config")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "nginx.conf").is_symlink() and (tmp_path / "nginx.conf").read_text() == "new config"
    assert stat.S_IMODE((tmp_path / "nginx.conf").stat().st_mode) == 0o600


def test_default_is_not_a_shared_directory() -> None:
    assert not str(default_state_dir()).startswith("/tmp")
    if os.geteuid() == 0:
        assert default_state_dir() == Path("/var/lib/daprdockr")


def test_a_state_dir_under_another_users_directory_is_refused(root: None, tmp_path: Path) -> None:
    """Regression: a state dir the agent owns, inside a directory another user owns, passed; that
    user can rename it away and put a directory of their own (or a symlink) in its place between
    the check and nginx reading its config."""
    nobody = pwd.getpwnam("nobody")
    home = tmp_path / "home-of-nobody"
    home.mkdir(mode=0o755)
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(ValidationError, match=f"its parent {home} belongs to uid {nobody.pw_uid}"):
        prepare_state_dir(home / "daprdockr")
