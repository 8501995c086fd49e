"""What ``autotrain-menu`` does, behind both its flags and its interactive options.

Each action of :class:`Controller` returns the command line's exit code: 0 success; 1 runtime failure
(a refused command, a run that did not complete, a supervisor that cannot be started); 2 invalid
configuration (one line per problem, nothing sent); 3 no supervisor reachable. :func:`follow_run`
follows a run to its end, with a rich progress bar on a terminal and plain lines otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from heidi_engine.bus.config import ConfigError, load_config
from heidi_engine.bus.connection import BUS_ENV
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError, CommandRefused
from heidi_engine.bus.event import is_run_id
from heidi_engine.bus.exit_status import (
    EXIT_BAD_USAGE,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NO_SUPERVISOR,
    EXIT_OK,
)
from heidi_engine.bus.journal import load_state_file
from heidi_engine.bus.redaction import clean, default_redactor
from heidi_engine.bus.state import ACTIVE_STATUSES, FINISHED_STATUSES, RESUMABLE_STATUSES
from heidi_engine.bus.summary import run_summary
from heidi_engine.ui.connect import LaunchError, NoSupervisor, ensure_supervisor, find_supervisor, pid_alive
from heidi_engine.ui.menu.follow import StageProgress
from heidi_engine.ui.status_view import format_runs, format_status, resume_hint
from heidi_engine.ui.text import fmt_duration

__all__ = [
    "EXIT_BAD_USAGE",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_NO_SUPERVISOR",
    "EXIT_OK",
    "PROG",
    "Controller",
    "follow_run",
    "runs_from_files",
]

PROG = "autotrain-menu"
_STAGES = ("generate", "validate", "train", "eval")
_POLL_S = 0.2
_LOST_AFTER_S = 15.0
_DETAIL_S = 1.0  # the full state is asked for at most once a second


def runs_from_files(home: Path) -> list[dict[str, Any]]:
    """What ``list_runs`` answers, read from ``<home>/runs/*/state.json`` when no supervisor runs."""
    root = home / "runs"
    folders = (
        sorted((p for p in root.iterdir() if p.is_dir() and is_run_id(p.name)), reverse=True)
        if root.is_dir()
        else []
    )
    return [run_summary(folder.name, load_state_file(folder)) for folder in folders]


def _stages_done(status: dict[str, Any]) -> int:
    """Stages finished so far, estimated from the round and the stage in progress."""
    round_no = int(status.get("current_round") or 0)
    stage = status.get("current_stage")
    index = _STAGES.index(stage) if stage in _STAGES else (len(_STAGES) if stage == "round_end" else 0)
    return max(0, (round_no - 1) * len(_STAGES) + index) if round_no else 0


def _describe(status: dict[str, Any], detail: str | None = None) -> str:
    return (
        f"round {status.get('current_round')}/{status.get('total_rounds')} · "
        f"{clean(str(status.get('current_stage') or '-'))}{' · ' + detail if detail else ''} · "
        f"{clean(str(status.get('status')))}"
    )


def _stage_detail(client: ControlClient, inside: StageProgress, now: float) -> str | None:
    """Progress inside the current stage from the full state; ``None`` when it cannot be had."""
    try:
        snapshot = client.call("snapshot", timeout_s=3.0)
    except BusError:
        return None
    state = snapshot.get("state") if isinstance(snapshot, dict) else None
    return inside.detail(state, now) if isinstance(state, dict) else None


def follow_run(client: ControlClient, run_id: str, out: TextIO, err: TextIO) -> int:
    """Follow ``run_id`` to its end: a rich progress bar on a terminal, plain lines otherwise.

    0 when it completed; 1 when it stopped, failed or was interrupted, or the supervisor went away.
    """
    tty = out.isatty()
    progress = None
    if tty:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=out),
            transient=False,
        )
        progress.start()
    task = progress.add_task(run_id, total=None) if progress is not None else None
    started, lost_since, last_line = time.monotonic(), None, ""
    inside, detail, detail_at = StageProgress(), None, float("-inf")
    status: dict[str, Any] = {}
    interrupted = False
    try:
        while True:
            try:
                status = dict(client.call("status", timeout_s=3.0))
                lost_since = None
            except BusError as exc:
                lost_since = lost_since or time.monotonic()
                # A dead pid is certain at once; a silent live one gets some time (it may be busy).
                gone = not client.info.remote and not pid_alive(client.info.pid)
                if gone or time.monotonic() - lost_since > _LOST_AFTER_S:
                    print(
                        f"{PROG}: lost the supervisor while following {run_id}: {exc}", file=err, flush=True
                    )
                    return EXIT_FAILURE
                time.sleep(_POLL_S)
                continue
            if status.get("run_id") != run_id:
                print(
                    f"{PROG}: run {run_id} is no longer the supervisor's run "
                    f"(now {clean(str(status.get('run_id')))})",
                    file=err,
                    flush=True,
                )
                return EXIT_FAILURE
            total = max(1, int(status.get("total_rounds") or 1)) * len(_STAGES)
            finished = status.get("status") in FINISHED_STATUSES
            if finished:
                detail = None  # the last in-stage figures would read as still under way
            elif time.monotonic() - detail_at >= _DETAIL_S:
                detail_at = time.monotonic()
                detail = _stage_detail(client, inside, detail_at)
            if progress is not None and task is not None:
                done = total if status.get("status") == "completed" else min(_stages_done(status), total)
                progress.update(
                    task, total=total, completed=done, description=f"{run_id} {_describe(status, detail)}"
                )
            else:
                line = _describe(status, detail)
                if line != last_line:
                    last_line = line
                    print(f"[{fmt_duration(time.monotonic() - started):>8}] {run_id} {line}", file=out, flush=True)
            if finished:
                break
            time.sleep(_POLL_S)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if progress is not None:
            progress.stop()
    if interrupted:
        # Ctrl+C stops the following, not the run: say so, and how to stop the run itself.
        print(
            f"{PROG}: stopped following; run {run_id} continues ({PROG} --stop to stop it, "
            f"{PROG} --wait to follow it again)",
            file=err,
            flush=True,
        )
        return EXIT_INTERRUPTED
    final = status.get("status")
    if final == "completed":
        print(f"run {run_id} completed", file=out, flush=True)
        return EXIT_OK
    reason = f": {clean(str(status['error']))}" if status.get("error") else ""
    print(f"{PROG}: run {run_id} ended {final}{reason}", file=err, flush=True)
    return EXIT_FAILURE


class Controller:
    """The actions behind both the flags and the menu options; each returns an exit code."""

    def __init__(self, home: Path, *, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.home = home
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.started = False
        self.json_mode = False  # --json: stdout carries one JSON document, the human lines go to stderr

    def say(self, text: str) -> None:
        print(text, file=self.err if self.json_mode else self.out, flush=True)

    def emit(self, body: object) -> None:
        """The command's machine-readable answer on stdout, redacted."""
        print(json.dumps(default_redactor().redact_obj(body), indent=2), file=self.out, flush=True)

    def complain(self, text: str) -> None:
        print(f"{PROG}: {text}", file=self.err, flush=True)

    @property
    def config_path(self) -> Path:
        return self.home / "config.yaml"

    # -- reaching the supervisor -------------------------------------------------------------------

    def _client(self, *, launch: bool) -> ControlClient | int:
        """A client of the running (or, with ``launch``, a freshly started) supervisor, or an exit code.

        ``self.started`` tells whether this call started the supervisor (so that a command refused for
        nothing can stop it again).
        """
        self.started = False
        try:
            if not launch:
                return ControlClient(find_supervisor(self.home), sender="menu")
            info, started = ensure_supervisor(self.home)
        except NoSupervisor as exc:
            self.complain(str(exc))
            return EXIT_NO_SUPERVISOR
        except LaunchError as exc:
            self.complain(f"cannot start the supervisor:\n{exc}")
            return exc.exit_code
        self.started = started
        if started:
            self.say(f"started autotrain-supervisor (pid {info.pid}) on {self.home}")
        return ControlClient(info, sender="menu")

    def _undo_launch(self, client: ControlClient) -> None:
        """Stop the supervisor this command started, when the command it was started for was refused."""
        if not self.started:
            return
        try:
            client.call("shutdown")
        except BusError as exc:
            self.complain(f"could not stop the supervisor it started (pid {client.info.pid}): {exc}")
            return
        self.say(f"stopped the supervisor it had started (pid {client.info.pid})")

    def _left_running(self, client: ControlClient) -> None:
        self.say(
            f"the supervisor (pid {client.info.pid}) keeps running on {self.home}; "
            f"{PROG} --shutdown stops it"
        )

    def _call(self, client: ControlClient, name: str, args: dict[str, Any] | None = None) -> Any:
        """The command's result, or ``None`` after reporting a refusal or a lost supervisor."""
        try:
            return client.call(name, args)
        except CommandRefused as exc:
            self.complain(f"{name} refused: {exc}")
        except BusError as exc:
            self.complain(f"{name} failed: {exc}")
        return None

    # -- actions -----------------------------------------------------------------------------------

    def status(self, *, as_json: bool = False) -> int:
        """Print the supervisor's status (JSON for scripts); 3 when no supervisor runs."""
        client = self._client(launch=False)
        if isinstance(client, int):
            self._last_run_from_files(as_json=as_json)
            return client
        with client:
            result = self._call(client, "status")
            snapshot = self._call(client, "snapshot") if result is not None and result.get("run_id") else None
        if result is None:
            return EXIT_FAILURE
        if isinstance(snapshot, dict) and isinstance(snapshot.get("state"), dict):
            # The outcome so far: the per-round eval summaries and the best round.
            result["evals"] = snapshot["state"].get("evals") or []
            result["best_round"] = snapshot["state"].get("best_round")
        if as_json:
            self.emit(dict(sorted(result.items())))
        else:
            self.say(format_status(result))
        return EXIT_OK

    def _last_run_from_files(self, *, as_json: bool) -> None:
        """With no supervisor: the supervisor is down, and the last run as its files left it."""
        if os.environ.get(BUS_ENV):
            # A remote supervisor's runs are not here; only the line above says why there is no status.
            if as_json:
                self.emit({"supervisor": "down", "last_run": None})
            return
        runs = runs_from_files(self.home)
        last = runs[0] if runs else None
        if as_json:
            self.emit({"supervisor": "down", "last_run": last})
            return
        self.say("supervisor: down (autotrain-menu --start starts one with a run)")
        if last is None:
            self.say(f"no runs yet in {self.home / 'runs'}")
            return
        self.say("last run, from its files:\n" + format_runs([last]))
        hint = resume_hint(last)
        if hint:
            self.say(hint)

    def control(self, name: str) -> int:
        """``stop``, ``pause`` or ``resume`` the active run, or ``shutdown`` the daemon; 3 when none runs."""
        client = self._client(launch=False)
        if isinstance(client, int):
            return client
        with client:
            result = self._call(client, name)
        if result is None:
            return EXIT_FAILURE
        done = {
            "stop": "stop requested: the running stage finishes at its next boundary",
            "pause": "pause requested: the run parks at its next safe boundary",
            "resume": "resumed",
            "shutdown": "supervisor shutting down",
        }[name]
        if self.json_mode:
            self.emit({"command": name, "ok": True, "message": done})
        elif name == "shutdown":
            self.say(done)
        else:
            self.say(f"{clean(str(result.get('run_id')))}: {done} (status {clean(str(result.get('status')))})")
        return EXIT_OK

    def config_problems(self, overrides: dict[str, str]) -> list[str]:
        """Problems of config.yaml, the environment and ``overrides`` together, as the supervisor will see
        them; a bad value that a later source replaces is only warned about."""
        warnings: list[str] = []
        try:
            load_config(
                self.config_path if self.config_path.exists() else None, overrides=overrides, warnings=warnings
            )
        except ConfigError as exc:
            return exc.problems
        for warning in warnings:
            self.complain(f"warning: {warning}")
        return []

    def refuse_config(self, problems: list[str]) -> int:
        self.complain("invalid configuration:\n" + "\n".join(problems))
        return EXIT_BAD_USAGE

    def start(self, overrides: dict[str, str], *, wait: bool = False) -> int:
        """Start a new run (and the supervisor first when none runs); with ``wait``, follow it to its end."""
        problems = self.config_problems(overrides)
        if problems:
            return self.refuse_config(problems)
        client = self._client(launch=True)
        if isinstance(client, int):
            return client
        with client:
            result = self._call(client, "start", {"overrides": overrides})
            if result is None:
                self._undo_launch(client)
                return EXIT_FAILURE
            run_id = str(result["run_id"])
            self.say(f"started run {run_id}")
            if not wait:
                if self.json_mode:
                    self.emit({"run_id": run_id, "status": "started"})
                return EXIT_OK
            return self._follow(client, run_id)

    def _follow(self, client: ControlClient, run_id: str) -> int:
        code = follow_run(client, run_id, self.err if self.json_mode else self.out, self.err)
        if code != EXIT_INTERRUPTED and pid_alive(client.info.pid):
            self._left_running(client)
        if self.json_mode:
            self.emit({"run_id": run_id, "completed": code == EXIT_OK, "exit_code": code})
        return code

    def follow_current(self) -> int:
        """Follow the supervisor's active run to its end (``--wait`` alone); 1 when none is active."""
        client = self._client(launch=False)
        if isinstance(client, int):
            return client
        with client:
            status = self._call(client, "status")
            if status is None:
                return EXIT_FAILURE
            if status.get("status") not in ACTIVE_STATUSES:
                last = status.get("run_id")
                self.complain(
                    "no active run to follow"
                    + (f" (last run {clean(str(last))} is {clean(str(status.get('status')))})" if last else "")
                )
                return EXIT_FAILURE
            return self._follow(client, str(status["run_id"]))

    def _resumable_problem(self, run_id: str | None) -> str | None:
        """Why resuming cannot succeed, judged from the run files (no supervisor needed), or ``None``."""
        runs = runs_from_files(self.home)
        if run_id is not None:
            found = [r for r in runs if r.get("run_id") == run_id]
            if not found:
                return f"no run {run_id} in {self.home / 'runs'}"
            status = found[0].get("status")
            if status not in RESUMABLE_STATUSES and status not in ACTIVE_STATUSES:
                return f"run {run_id} is {clean(str(status))}; only stopped, interrupted or failed runs resume"
            return None
        if not any(r.get("status") in RESUMABLE_STATUSES | ACTIVE_STATUSES for r in runs):
            return f"no stopped, interrupted or failed run to resume in {self.home / 'runs'}"
        return None

    def resume_run(self, run_id: str | None, *, wait: bool = False) -> int:
        """Continue the last stopped or interrupted run (or ``run_id``), starting the supervisor if needed."""
        if run_id is not None and not is_run_id(run_id):
            self.complain(f"{run_id[:80]!r} is not a run id (run_YYYYMMDD_HHMMSS_<8 hex>)")
            return EXIT_BAD_USAGE
        try:
            find_supervisor(self.home)
        except NoSupervisor:
            # Starting a supervisor only to hear that there is nothing to resume would leave it behind.
            problem = self._resumable_problem(run_id)
            if problem is not None:
                self.complain(f"resume_run refused: {problem}")
                return EXIT_FAILURE
        client = self._client(launch=True)
        if isinstance(client, int):
            return client
        with client:
            result = self._call(client, "resume_run", {"run_id": run_id} if run_id else {})
            if result is None:
                self._undo_launch(client)
                return EXIT_FAILURE
            resumed = str(result["run_id"])
            self.say(f"resumed run {resumed}")
            if not wait:
                if self.json_mode:
                    self.emit({"run_id": resumed, "status": "resumed"})
                return EXIT_OK
            return self._follow(client, resumed)

    def compare(self, run_a: str, run_b: str, *, as_json: bool = False) -> int:
        """Two runs side by side, from their files; 2 when either is not a run of this home."""
        from heidi_engine.ui.menu.compare import CompareError, compare_runs, format_compare

        try:
            result = compare_runs(self.home, run_a, run_b)
        except CompareError as exc:
            self.complain(str(exc))
            return EXIT_BAD_USAGE
        if as_json:
            self.emit(result)
        else:
            self.say(format_compare(result))
        return EXIT_OK

    def export_tensorboard(self, run_id: str, folder: Path) -> int:
        """Write a run's trainer samples and eval results to ``folder`` as TensorBoard scalars."""
        from heidi_engine.ui.menu.tensorboard_export import ExportError, export_run

        try:
            written = export_run(self.home, run_id, folder)
        except ExportError as exc:
            self.complain(str(exc))
            return EXIT_BAD_USAGE if exc.bad_usage else EXIT_FAILURE
        self.say(f"wrote {written} scalars of {run_id} to {folder}")
        return EXIT_OK

    def list_runs(self, *, as_json: bool = False) -> int:
        """Every run of the home, newest first; read from the files when no supervisor runs."""
        try:
            with ControlClient(find_supervisor(self.home), sender="menu") as client:
                runs = self._call(client, "list_runs")
            if runs is None:
                return EXIT_FAILURE
        except NoSupervisor:
            runs = runs_from_files(self.home)
        if as_json:
            self.emit(runs)
        else:
            self.say(format_runs(runs))
        return EXIT_OK
