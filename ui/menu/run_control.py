"""The run-control actions of ``autotrain-menu``: start, stop, pause, resume, resume a run, follow it.

Each returns the command line's exit code: 0 success; 1 runtime failure (a refused command, a run that did
not complete, a supervisor that cannot be started); 2 invalid configuration (one line per problem, nothing
sent); 3 no supervisor reachable. Starting and resuming a run start the supervisor first when none runs.
"""

from __future__ import annotations

from heidi_engine.bus.config import ConfigError, load_config, start_only_problems
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.event import is_run_id
from heidi_engine.bus.exit_status import EXIT_BAD_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from heidi_engine.bus.redaction import clean
from heidi_engine.bus.state import ACTIVE_STATUSES, RESUMABLE_STATUSES
from heidi_engine.ui.connect import NoSupervisor, find_supervisor, pid_alive
from heidi_engine.ui.menu.follow import follow_run
from heidi_engine.ui.menu.launch import SupervisorAccess, runs_from_files

__all__ = ["RunControl"]


class RunControl(SupervisorAccess):
    """The actions that start, steer and follow runs; each returns an exit code."""

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
        start_only = start_only_problems(overrides)
        if start_only:  # the supervisor refuses them too; refused here, no supervisor is started for nothing
            for problem in start_only:
                self.complain(f"start refused: {problem}")
            return EXIT_BAD_USAGE
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
            if found[0].get("problem"):
                return f"cannot resume {clean(str(found[0]['problem']), 600)}"
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
                self.complain(f"--resume-run refused: {problem}")
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
