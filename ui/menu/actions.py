"""What ``autotrain-menu`` does, behind both its flags and its interactive options.

Each action of :class:`Controller` returns the command line's exit code: 0 success; 1 runtime failure
(a refused command, a run that did not complete, a supervisor that cannot be started); 2 invalid
configuration (one line per problem, nothing sent); 3 no supervisor reachable. The actions are built in
layers: :class:`~heidi_engine.ui.menu.launch.SupervisorAccess` prints and reaches the supervisor,
:class:`~heidi_engine.ui.menu.run_control.RunControl` starts, steers and follows runs
(:func:`~heidi_engine.ui.menu.follow.follow_run` for ``--wait``), and :class:`Controller` adds the
status and the reports on runs (list, compare, TensorBoard export).
"""

from __future__ import annotations

import os
from pathlib import Path

from heidi_engine.bus.connection import BUS_ENV
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.exit_status import EXIT_BAD_USAGE, EXIT_FAILURE, EXIT_OK
from heidi_engine.ui.connect import NoSupervisor, find_supervisor
from heidi_engine.ui.menu.launch import runs_from_files
from heidi_engine.ui.menu.run_control import RunControl
from heidi_engine.ui.status_view import format_runs, format_status, resume_hint

__all__ = ["Controller"]


class Controller(RunControl):
    """The actions behind both the flags and the menu options; each returns an exit code."""

    # -- status and reports ------------------------------------------------------------------------

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
