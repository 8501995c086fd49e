"""The README as a new user follows it (issue 28, Deliver 7 and 8): its Quick start's own code blocks and
every command of its command table, in a fresh shell (no venv active, a bare PATH, a new HOME and home);
and the spec's thin entry points ``scripts/loop.sh`` and ``scripts/menu.py`` run as subprocesses.

The Quick start's ``make demo`` and ``make test`` take minutes: they are checked with ``make -n`` (the
targets exist and would run) rather than run; every other line of the Quick start runs as written.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harness import agent_env, scripted
from menu_driver import CONFIG, QUICK_AGENT

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(240)
_LONG = {"make demo": "make -s -n demo >/dev/null", "make test": "make -s -n test >/dev/null"}
_PROGRAMS = ("autotrain-supervisor", "autotrain-menu", "autotrain-dash", "scripts/loop.sh", "scripts/menu.py")


def _section(title: str) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(title)
    end = readme.find("\n## ", start + len(title))
    return readme[start : end if end >= 0 else None]


def _quick_start_lines() -> list[str]:
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", _section("## Quick start"), re.S)
    assert blocks, "the Quick start has no bash block"
    return [_LONG.get(line.strip(), line) for block in blocks for line in block.splitlines() if line.strip()]


def _table_programs() -> list[str]:
    found = []
    for row in _section("## Commands").splitlines():
        first = re.match(r"\| `([^`]+)`", row)
        if first:
            program = first.group(1).split()[0]
            if program in _PROGRAMS and program not in found:
                found.append(program)
    return found


def _fresh_shell(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(tmp_path / "user"), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "AUTOTRAIN_HOME": str(tmp_path / "home"),
           "AUTOTRAIN_MODEL_CACHE": os.environ.get("AUTOTRAIN_MODEL_CACHE", "")}  # fmt: skip
    (tmp_path / "user").mkdir()
    (tmp_path / "home").mkdir()
    return subprocess.run(["bash", "--noprofile", "--norc", "-e", "-c", script], cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=200, check=False)  # fmt: skip


def test_the_quick_start_and_every_table_command_work_in_a_fresh_shell(tmp_path: Path) -> None:
    programs = _table_programs()
    assert set(programs) == set(_PROGRAMS), programs
    # Each Quick start line must succeed; a --status may say "no supervisor" with its documented exit 3.
    lines = [
        f"set +e\n{line}\nrc=$?\nset -e\n"
        f'[ "$rc" = 0 ] || {{ [ "$rc" = 3 ] && [[ {line!r} == *--status* ]]; }} || {{ echo "exit $rc: {line}"; exit 7; }}'
        for line in _quick_start_lines()
    ]
    lines += ['command -v autotrain-menu >/dev/null || { echo "the Quick start leaves '
             'autotrain-menu off PATH"; exit 9; }']  # fmt: skip
    lines += [f"{p} --help >/dev/null" for p in programs]
    lines += [
        'set +e; autotrain-menu --status; rc=$?; set -e; [ "$rc" = 3 ] || { echo "--status exit $rc"; exit 8; }',
        "autotrain-menu --list",
        "autotrain-menu --config-show >/dev/null",
        "scripts/menu.py --list",
        "python -m heidi_engine.ui.dash_cli --help >/dev/null",
        'if autotrain-menu --help | grep -q -- "--init"; then autotrain-menu --init "$AUTOTRAIN_HOME"; fi',
    ]
    done = _fresh_shell("\n".join(["set -x", *lines]), tmp_path)
    assert done.returncode == 0, f"rc={done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    assert "no runs yet" in done.stdout and not (tmp_path / "home" / "run" / "bus.json").exists()


def _loop(home: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(ROOT / "scripts" / "loop.sh"), "--home", str(home), *args],
                            env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_loop_sh_starts_and_follows_a_run_to_its_end(home: Path, detached: None) -> None:
    (home / "config.yaml").write_text(CONFIG)
    loop = _loop(home, QUICK_AGENT, "--rounds", "1", "--samples", "4")
    out, err = loop.communicate(timeout=120)
    assert loop.returncode == 0, (out, err)
    assert re.search(r"run run_\S+ completed", out), out


def test_ctrl_c_in_loop_sh_stops_the_run_at_the_next_stage_boundary(home: Path, detached: None) -> None:
    (home / "config.yaml").write_text(CONFIG)
    loop = _loop(home, agent_env(scripted("--events", "400", "--delay", "0.05")), "--rounds", "1", "--samples", "4")
    try:
        assert loop.stdout is not None
        seen = [loop.stdout.readline() for _ in range(2)]  # "started autotrain-supervisor …", "started run …"
        assert any(line.startswith("started run run_") for line in seen), seen
        loop.send_signal(signal.SIGINT)
        out, err = loop.communicate(timeout=120)
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait(5)
    assert "stopping the run at its next stage boundary" in err, err
    assert loop.returncode == 1 and "ended stopped" in err, (loop.returncode, out, err)
    listed = subprocess.run([sys.executable, str(ROOT / "scripts" / "menu.py"), "--home", str(home), "--list"],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert " stopped " in listed.stdout, listed.stdout
