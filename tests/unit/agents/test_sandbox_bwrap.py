"""The bubblewrap command line: what the sandbox is shown and given, decided without running it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from heidi_engine.agents.sandbox.bwrap import bwrap_command
from heidi_engine.agents.sandbox.limits import usable_cpus


@pytest.mark.parametrize("root", [False, True])
def test_only_the_system_and_the_interpreter_are_shown_read_only(root: bool, tmp_path: Path) -> None:
    harness = tmp_path / "harness.py"
    harness.write_text("print('harness')\n")
    command = bwrap_command(
        "/usr/bin/bwrap", str(harness), {"solution.py": "x = 1\n"}, 8 << 20, ["a=1"], root=root
    )
    try:
        argv = command.argv
        for flag in ("--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
                     "--new-session", "--clearenv"):  # fmt: skip
            assert flag in argv
        assert ("--unshare-user" in argv) is not root
        binds = [argv[i + 2] for i, arg in enumerate(argv) if arg in ("--bind", "--ro-bind")]
        assert "/usr" in binds
        assert "--bind" not in argv  # nothing of the host is writable
        home = os.path.expanduser("~")
        assert all(not path.startswith(str(Path(__file__).parents[3])) for path in binds)
        assert home not in binds and "/" not in binds
        tmpfs = {argv[i + 1]: argv[i - 1] for i, arg in enumerate(argv) if arg == "--tmpfs"}
        assert tmpfs == dict.fromkeys(("/tmp", "/dev/shm", "/work"), str(8 << 20))  # each size-limited
        # bwrap's own root and /dev are tmpfs of no size: read-only once everything is mounted in them.
        remounts = [(i, argv[i + 1]) for i, arg in enumerate(argv) if arg == "--remount-ro"]
        assert [path for _, path in remounts] == ["/dev", "/"]
        mounts = ("--ro-bind", "--symlink", "--proc", "--dev", "--tmpfs", "--ro-bind-data", "--file")
        assert remounts[0][0] > argv.index("--dev")
        assert remounts[1][0] > max(i for i, arg in enumerate(argv) if arg in mounts)
        assert argv[-1] == "a=1"
        # The sources travel as descriptors: the solution's text is in its memfd, not in argv.
        assert "x = 1\n" not in argv and len(command.fds) == 2
        assert os.pread(command.fds[-1], 100, 0) == b"x = 1\n"
    finally:
        for fd in command.fds:
            os.close(fd)


def test_a_tmpfs_of_no_size_is_refused(tmp_path: Path) -> None:
    harness = tmp_path / "harness.py"
    harness.write_text("")
    with pytest.raises(ValueError, match="tmpfs_bytes"):
        bwrap_command("/usr/bin/bwrap", str(harness), {}, 0, [], root=False)  # size 0 means unlimited


def test_usable_cpus_is_within_the_affinity() -> None:
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))
