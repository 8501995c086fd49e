"""``autotrain-menu`` for scripts: --json on the verbs, --version, --status with no supervisor, --logs --follow."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness import SupervisorProc, agent_env, scripted

from heidi_engine.bus.state import RunState

MENU = [sys.executable, "-m", "heidi_engine.ui.menu_cli"]
RUN_ID = "run_20240101_000000_0123abcd"
FAKE_KEY = "sk-proj-Q3xv9LmT2aZkR8pWc1NbYh4dJf7GsE0u"


def menu(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MENU, "--home", str(home), *args], capture_output=True, text=True, timeout=60, check=False)


def _run_folder(home: Path) -> Path:
    folder = home / "runs" / RUN_ID
    (folder / "logs").mkdir(parents=True)
    state = RunState(run_id=RUN_ID, status="stopped", current_round=1, total_rounds=2)
    (folder / "state.json").write_text(state.model_dump_json(), encoding="utf-8")
    return folder


def test_version_and_status_without_a_supervisor(home: Path) -> None:
    done = menu(home, "--version")
    assert done.returncode == 0 and done.stdout.startswith("autotrain-menu (AutoTrain supervisor) "), done
    _run_folder(home)
    done = menu(home, "--status")
    assert done.returncode == 3, done
    assert "supervisor: down" in done.stdout and RUN_ID in done.stdout and "stopped" in done.stdout, done
    assert f"--resume-run {RUN_ID}" in done.stdout, done
    done = menu(home, "--status", "--json")
    assert done.returncode == 3, done
    body = json.loads(done.stdout)
    assert body["supervisor"] == "down" and body["last_run"]["run_id"] == RUN_ID


def test_start_and_stop_answer_json(home: Path, start_supervisor: Callable[..., SupervisorProc]) -> None:
    sup = start_supervisor(env=agent_env(scripted("--events", "2000", "--delay", "0.02")), config="ROUNDS: 1\n")
    sup.wait_ready()
    done = menu(home, "--start", "--json")
    assert done.returncode == 0, (done, sup.output())
    run_id = json.loads(done.stdout)["run_id"]
    assert sup.status()["run_id"] == run_id
    done = menu(home, "--stop", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["command"] == "stop", done
    sup.wait_status("stopped")
    done = menu(home, "--list", "--json")
    assert [run["run_id"] for run in json.loads(done.stdout)] == [run_id], done


def test_logs_follow_shows_new_agent_lines_redacted(home: Path) -> None:
    log = _run_folder(home) / "logs" / "train_round_1.log"
    log.write_text("loading the model\n", encoding="utf-8")
    (log.parent / "generate_round_1.log").write_text("generated 3\n", encoding="utf-8")
    done = menu(home, "--logs")
    assert done.returncode == 0, done
    assert done.stdout.splitlines() == ["generate r1 | generated 3", "train r1    | loading the model"], done
    proc = subprocess.Popen(
        [*MENU, "--home", str(home), "--logs", "--follow", "--stage", "train", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)

            def next_line() -> dict[str, str]:
                if not selector.select(timeout=20):
                    proc.kill()
                    raise AssertionError(f"no line from --logs --follow; stderr: {proc.communicate()[1]}")
                return dict(json.loads(proc.stdout.readline()))  # type: ignore[union-attr]

            assert next_line() == {"run_id": RUN_ID, "source": "train r1", "line": "loading the model"}
            with log.open("a", encoding="utf-8") as handle:
                handle.write(f"step 1 loss 0.9 key={FAKE_KEY}\n")
            line = next_line()["line"]
            assert line.startswith("step 1 loss 0.9") and FAKE_KEY not in line, line
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, (proc.returncode, err)  # Ctrl+C ends following, as for tail -f
