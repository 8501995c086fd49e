"""The interactive ``autotrain-menu``: the seed's eight options plus Exit, on prompt_toolkit prompts.

Each option is one short action of the :class:`~heidi_engine.ui.menu.actions.Controller` the flags use too,
so the menu and scripts cannot disagree. "Configure Parameters" edits ``config.yaml`` with completion and
validation as you type (:mod:`heidi_engine.ui.menu.config_edit`): a value the schema refuses is shown with
its rule and cannot be entered, and a saved value keeps the file's comments (``dump_yaml_update``). The
dashboard runs in the foreground and the menu comes back when it exits; the HTTP server runs in the
background until the menu exits (:mod:`heidi_engine.ui.menu.options`). This module holds the prompt loop.
"""

from __future__ import annotations

from collections.abc import Callable

from prompt_toolkit import PromptSession

from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.exit_status import EXIT_OK
from heidi_engine.bus.redaction import clean
from heidi_engine.ui.connect import NoSupervisor, find_supervisor
from heidi_engine.ui.menu.actions import Controller
from heidi_engine.ui.menu.config_edit import ChoiceValidator, configure
from heidi_engine.ui.menu.options import MenuOptions
from heidi_engine.ui.status_view import resume_hint

__all__ = ["OPTIONS", "Menu"]

OPTIONS: tuple[str, ...] = (
    "Start New Run", "Resume Last Run", "Stop Pipeline", "Pause Pipeline", "Resume Pipeline",
    "Configure Parameters", "View Dashboard", "Start HTTP Server", "Exit",
)  # fmt: skip
_EXIT = str(len(OPTIONS))


class Menu(MenuOptions):
    """The option loop; :meth:`run` returns the exit code."""

    def __init__(self, controller: Controller, session: PromptSession[str] | None = None) -> None:
        super().__init__(controller, session)
        self.actions: dict[str, Callable[[], object]] = {
            "1": self.start_new_run,
            "2": self.resume_last_run,
            "3": lambda: controller.control("stop"),
            "4": lambda: controller.control("pause"),
            "5": lambda: controller.control("resume"),
            "6": lambda: configure(controller, self.session),
            "7": self.view_dashboard,
            "8": self.start_http,
        }

    def headline(self) -> str:
        """One line on the supervisor and its run (quick: a ping and a status)."""
        try:
            info = find_supervisor(self.controller.home, timeout_s=1.0)
        except NoSupervisor:
            return "supervisor: not running (options 1 and 2 start one)"
        try:
            with ControlClient(info, sender="menu", timeout_s=1.0) as client:
                status = client.call("status")
        except BusError as exc:
            return f"supervisor: pid {info.pid}, not answering ({clean(str(exc), 100)})"
        run = status.get("run_id")
        http = status.get("http")
        http_down = " · HTTP server down" if isinstance(http, dict) and http.get("error") else ""
        if run is None:
            return f"supervisor: pid {info.pid} · no run yet{http_down}"
        # A pause asked for but not yet reached is said, or the menu would read as if the request was lost.
        pausing = " · ⏸ pause requested" if status.get("pause_requested") and status.get("status") != "paused" else ""
        line = (
            f"supervisor: pid {info.pid} · {clean(str(run))} · {clean(str(status.get('status')))}{pausing} · "
            f"round {status.get('current_round')}/{status.get('total_rounds')} · "
            f"{clean(str(status.get('current_stage') or '-'))}{http_down}"
        )
        hint = resume_hint(status)
        return line + (f"\n  {hint} (option 2 here)" if hint else "")

    def run(self) -> int:
        say = self.controller.say
        try:
            while True:
                say(f"\nAutoTrain menu — {self.controller.home}")
                say(self.headline())
                for number, label in enumerate(OPTIONS, start=1):
                    say(f"  {number}. {label}")
                try:
                    choice = self.session.prompt(
                        f"Select [1-{_EXIT}]: ",
                        validator=ChoiceValidator(
                            {str(i) for i in range(1, len(OPTIONS) + 1)} | {"q", ""},
                            f"type a number from 1 to {_EXIT}",
                        ),
                        validate_while_typing=False,
                    ).strip()
                except EOFError:
                    choice = _EXIT
                if choice in (_EXIT, "q"):
                    return EXIT_OK
                action = self.actions.get(choice)
                if action is not None:
                    try:
                        action()
                    except (KeyboardInterrupt, EOFError):  # Ctrl+C / Ctrl+D inside an option's prompts
                        say("(cancelled)")
        except KeyboardInterrupt:
            return EXIT_OK
        finally:
            self.stop_http()
