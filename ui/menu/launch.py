"""The ground of ``autotrain-menu``'s actions: how they print, and how they reach the supervisor.

:class:`SupervisorAccess` prints the human lines (on stderr under ``--json``, whose stdout carries one JSON
document), finds the running supervisor or starts one, and stops again a supervisor it started for a
command that was refused. :func:`runs_from_files` answers ``list_runs`` from the run files when no
supervisor runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError, CommandRefused
from heidi_engine.bus.event import is_run_id
from heidi_engine.bus.exit_status import EXIT_NO_SUPERVISOR
from heidi_engine.bus.redaction import default_redactor
from heidi_engine.bus.summary import folder_summary
from heidi_engine.ui.connect import LaunchError, NoSupervisor, ensure_supervisor, find_supervisor
from heidi_engine.ui.status_view import orphaned_summary

__all__ = ["PROG", "SupervisorAccess", "runs_from_files"]

PROG = "autotrain-menu"
# The bus commands whose name is not what a user types: a message names the flag.
_USER_NAMES = {"resume_run": "--resume-run", "list_runs": "--list"}


def runs_from_files(home: Path) -> list[dict[str, Any]]:
    """What ``list_runs`` answers, read from ``<home>/runs/*/state.json`` (or, where that cannot be read,
    the run's ledger) when no supervisor runs: a run its dead supervisor left active reads ``interrupted``."""
    root = home / "runs"
    folders = (
        sorted((p for p in root.iterdir() if p.is_dir() and is_run_id(p.name)), reverse=True)
        if root.is_dir()
        else []
    )
    return [orphaned_summary(folder_summary(folder)) for folder in folders]


class SupervisorAccess:
    """Printing and reaching the supervisor, for the actions built on it (see
    :class:`~heidi_engine.ui.menu.actions.Controller`)."""

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
            client.call("shutdown", {"if_idle": True})  # never a run another command started meanwhile
        except CommandRefused:
            self._left_running(client)
            return
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
            self.complain(f"{_USER_NAMES.get(name, name)} refused: {exc}")
        except BusError as exc:
            self.complain(f"{_USER_NAMES.get(name, name)} failed: {exc}")
        return None
