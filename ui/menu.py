"""The interactive ``autotrain-menu``: the seed's eight options plus Exit, on prompt_toolkit prompts.

Each option is one short action of the :class:`~heidi_engine.ui.menu_actions.Controller` the flags use too,
so the menu and scripts cannot disagree. "Configure Parameters" edits ``config.yaml`` with completion and
validation as you type: a value the schema refuses is shown with its rule and cannot be entered, and a
saved value keeps the file's comments (``dump_yaml_update``). The dashboard runs in the foreground and
the menu comes back when it exits; the HTTP server runs in the background until the menu exits.
"""

from __future__ import annotations

import contextlib
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from prompt_toolkit import PromptSession
from prompt_toolkit.completion import FuzzyWordCompleter, WordCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.validation import ValidationError, Validator

from heidi_engine.bus.config import (
    FIELD_NAMES,
    SEED_FIELDS,
    AutoTrainConfig,
    ConfigError,
    dump_yaml_update,
    field_rule,
    validate_field,
)
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.redaction import clean
from heidi_engine.ui.launcher import NoSupervisor, find_supervisor

if TYPE_CHECKING:
    from heidi_engine.ui.menu_actions import Controller

__all__ = ["OPTIONS", "FieldValidator", "Menu", "configure", "dashboard_command"]

OPTIONS: tuple[str, ...] = (
    "Start New Run", "Resume Last Run", "Stop Pipeline", "Pause Pipeline", "Resume Pipeline",
    "Configure Parameters", "View Dashboard", "Start HTTP Server", "Exit",
)  # fmt: skip
_EXIT = str(len(OPTIONS))
_HTTP_START_TIMEOUT_S = 10.0
# Values worth offering on Tab, beyond the field's current value and its default.
_SUGGESTIONS: dict[str, tuple[str, ...]] = {
    "BASE_MODEL": ("smollm2-135m-instruct", "mistralai/Mistral-7B-Instruct-v0.2"),
    "TEACHER_MODEL": ("gpt-4o-mini", "local:smollm2-135m-instruct"),
    "TASK_SOURCE": ("bank", "self-instruct", "file:"),
    "MAX_COST_USD": ("",),
}


class FieldValidator(Validator):
    """Validates one config field as it is typed; the error line names the rule (``range 1–100``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def validate(self, document: Document) -> None:
        try:
            validate_field(self.name, document.text)
        except ConfigError as exc:
            raise ValidationError(cursor_position=len(document.text), message=exc.problems[0]) from None


class _ChoiceValidator(Validator):
    def __init__(self, choices: set[str], hint: str) -> None:
        self.choices = choices
        self.hint = hint

    def validate(self, document: Document) -> None:
        if document.text.strip() not in self.choices:
            raise ValidationError(cursor_position=len(document.text), message=self.hint)


def _shown(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _file_values(path: Path) -> dict[str, object]:
    """The top-level values of config.yaml as written, tolerating a file the schema would refuse."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str)} if isinstance(data, dict) else {}


def _current(path: Path) -> dict[str, str]:
    values = {name: _shown(info.default) for name, info in AutoTrainConfig.model_fields.items()}
    values.update({k: _shown(v) for k, v in _file_values(path).items() if k in values})
    return values


def _field_names() -> list[str]:
    return list(SEED_FIELDS) + [name for name in FIELD_NAMES if name not in SEED_FIELDS]


def configure(controller: Controller, session: PromptSession[str] | None = None) -> int:
    """Edit config.yaml field by field until an empty field name (or Ctrl+D); returns 0."""
    try:
        _edit(controller, session or PromptSession())
    except EOFError:
        pass
    return 0


def _edit(controller: Controller, session: PromptSession[str]) -> None:
    path = controller.config_path
    names = _field_names()
    say = controller.say
    while True:
        current = _current(path)
        say(f"\nConfiguration ({path}):")
        for name in SEED_FIELDS:
            say(f"  {name:<18} {clean(current[name], 60):<38} {field_rule(name)}")
        say("  (every other field can be set too: Tab completes names)")
        name = session.prompt(
            "Field to change (empty to finish): ",
            completer=FuzzyWordCompleter(names),
            validator=_ChoiceValidator({"", *names}, "unknown field; Tab lists them"),
            validate_while_typing=False,
        ).strip()
        if not name:
            return
        info = AutoTrainConfig.model_fields[name]
        rule = field_rule(name)
        shown_default = _shown(info.default)
        choices = dict.fromkeys([current[name], shown_default, *_SUGGESTIONS.get(name, ()), *_literals(name)])
        toolbar = f"{name}: {info.description or ''} Rule: {rule}. Default: {shown_default or '(empty)'}"
        raw = session.prompt(
            f"{name} [{rule}] = ",
            default=current[name],
            completer=WordCompleter([c for c in choices if c], sentence=True),
            validator=FieldValidator(name),
            validate_while_typing=True,
            bottom_toolbar=toolbar,
        )
        try:
            dump_yaml_update(path, {name: raw})
        except ConfigError as exc:
            say("not saved:\n" + "\n".join(f"  {line}" for line in exc.problems))
            continue
        say(f"saved {name} = {clean(_shown(validate_field(name, raw)), 80)} in {path}")


def _literals(name: str) -> tuple[str, ...]:
    rule = field_rule(name)
    return tuple(part.strip().strip('"') for part in rule.split(" or ")) if rule.startswith('"') else ()


def dashboard_command(home: Path) -> list[str] | None:
    """``autotrain-dash --home H``: the script beside this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "autotrain-dash"
    found = str(beside) if beside.exists() else shutil.which("autotrain-dash")
    return None if found is None else [found, "--home", str(home)]


@contextlib.contextmanager
def _ignoring_sigint() -> Iterator[None]:
    """Ctrl+C in a foreground child reaches the menu too (same process group); only the child should stop."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Menu:
    """The option loop; :meth:`run` returns the exit code."""

    def __init__(self, controller: Controller, session: PromptSession[str] | None = None) -> None:
        self.controller = controller
        self.session: PromptSession[str] = session or PromptSession()
        self.http: subprocess.Popen[str] | None = None
        self.http_url: str | None = None
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
        if run is None:
            return f"supervisor: pid {info.pid} · no run yet"
        return (
            f"supervisor: pid {info.pid} · {clean(str(run))} · {clean(str(status.get('status')))} · "
            f"round {status.get('current_round')}/{status.get('total_rounds')} · "
            f"{clean(str(status.get('current_stage') or '-'))}"
        )

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
                        validator=_ChoiceValidator(
                            {str(i) for i in range(1, len(OPTIONS) + 1)} | {"q", ""},
                            f"type a number from 1 to {_EXIT}",
                        ),
                        validate_while_typing=False,
                    ).strip()
                except EOFError:
                    choice = _EXIT
                if choice in (_EXIT, "q"):
                    return 0
                action = self.actions.get(choice)
                if action is not None:
                    try:
                        action()
                    except (KeyboardInterrupt, EOFError):  # Ctrl+C / Ctrl+D inside an option's prompts
                        say("(cancelled)")
        except KeyboardInterrupt:
            return 0
        finally:
            self.stop_http()

    def start_new_run(self) -> None:
        """Ask for rounds and samples (Enter keeps config.yaml's), then start; the supervisor too if needed."""
        path = self.controller.config_path
        current = _current(path)
        overrides: dict[str, str] = {}
        for name in ("ROUNDS", "SAMPLES_PER_ROUND"):
            raw = self.session.prompt(
                f"{name} [{field_rule(name)}] = ",
                default=current[name],
                validator=FieldValidator(name),
                validate_while_typing=True,
            )
            if raw.strip() != current[name]:
                overrides[name] = raw.strip()
        self.controller.start(overrides)

    def resume_last_run(self) -> None:
        """Resume a paused run, else continue the last stopped or interrupted one."""
        try:
            info = find_supervisor(self.controller.home, timeout_s=1.0)
        except NoSupervisor:
            info = None
        if info is not None:
            with contextlib.suppress(BusError), ControlClient(info, sender="menu", timeout_s=2.0) as client:
                if client.call("status").get("pause_requested"):
                    self.controller.control("resume")
                    return
        self.controller.resume_run(None)

    def view_dashboard(self) -> None:
        """Run autotrain-dash in the foreground; the menu returns when it exits."""
        command = dashboard_command(self.controller.home)
        if command is None:
            self.controller.complain("autotrain-dash is not installed next to this interpreter or on PATH")
            return
        with _ignoring_sigint():
            code = subprocess.call(command)
        if code not in (0, 130, -signal.SIGINT):
            self.controller.complain(f"the dashboard exited {code}")

    def start_http(self) -> None:
        """Start the HTTP status server in the background (until the menu exits) and print its URL."""
        if self.http is not None and self.http.poll() is None:
            self.controller.say(f"HTTP status server already running at {self.http_url}")
            return
        command = [sys.executable, "-m", "heidi_engine.ui.http", "--home", str(self.controller.home)]
        # Same process group as the menu, so that it dies with the menu's terminal; SIGINT ignored, so
        # that Ctrl+C in the foreground dashboard does not take it down.
        self.http = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_ignore_sigint,
        )
        line = _first_line(self.http, _HTTP_START_TIMEOUT_S)
        if line is None or "http://" not in line:
            problem = (
                self.http.stderr.read().strip() if self.http.poll() is not None and self.http.stderr else ""
            )
            self.stop_http()
            self.controller.complain(
                f"the HTTP status server did not start: {problem or line or 'no answer'}"
            )
            return
        self.http_url = line[line.index("http://") :].split()[0]
        self.controller.say(f"HTTP status server running at {self.http_url} (until you exit the menu)")

    def stop_http(self) -> None:
        if self.http is None:
            return
        if self.http.poll() is None:
            self.http.terminate()
            try:
                self.http.wait(5)
            except subprocess.TimeoutExpired:
                self.http.kill()
                self.http.wait(5)
        for stream in (self.http.stdout, self.http.stderr):
            if stream is not None:
                stream.close()
        self.http = None


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _first_line(proc: subprocess.Popen[str], timeout_s: float) -> str | None:
    """The child's first stdout line, or ``None`` if it exits or stays silent until the deadline."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.2))
        if ready:
            return proc.stdout.readline() or None
        if proc.poll() is not None:
            return None
    return None
