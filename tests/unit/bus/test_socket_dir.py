"""The ipc socket folder outside a home with a long path: made by the daemon's user, never taken as found."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from heidi_engine.bus.connection import socket_dir
from heidi_engine.bus.storage import claim_private_dir

NOBODY = 65534


def test_a_folder_is_claimed_only_when_made_here_or_already_this_users_and_private(tmp_path: Path) -> None:
    made = claim_private_dir(tmp_path / "fresh")
    assert made.is_dir() and made.stat().st_mode & 0o777 == 0o700
    assert claim_private_dir(made) == made  # a folder of this user's, 0700: a previous run's
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    with pytest.raises(PermissionError, match=r"loose already exists .*mode 0755"):
        claim_private_dir(loose)
    (tmp_path / "link").symlink_to(made)
    with pytest.raises(PermissionError, match="a link of"):
        claim_private_dir(tmp_path / "link")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a folder owned by another user")
def test_a_socket_folder_planted_by_another_user_stops_the_supervisor_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / ("h" * 90)  # too long for ipc names: the sockets would go to a short folder in /tmp
    home.mkdir()
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    planted = socket_dir(home)
    planted.mkdir(mode=0o700)
    os.chown(planted, NOBODY, NOBODY)
    try:
        done = subprocess.run([sys.executable, "-m", "heidi_engine.supervisor.cli", "--home", str(home), "--no-gpu"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
        assert f"{planted} already exists and is not this user's private folder" in done.stderr, done.stderr
        assert "nobody" in done.stderr or f"uid {NOBODY}" in done.stderr, done.stderr
        assert list(planted.iterdir()) == []  # nothing of root's was bound there
    finally:
        planted.rmdir()
