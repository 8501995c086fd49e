"""The interactive ``autotrain-menu``: the seed's eight options plus Exit, on prompt_toolkit prompts.

Each option is one short action of the :class:`~heidi_engine.ui.menu.actions.Controller` the flags use too,
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
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import FuzzyWordCompleter, WordCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.validation import ValidationError, Validator

from heidi_engine.bus.config import (
    ENV_PREFIX,
    FIELD_NAMES,
    SEED_FIELDS,
    AutoTrainConfig,
    ConfigError,
    dump_yaml_update,
    env_overrides,
    field_rule,
    file_values,
    validate_field,
)
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.redaction import clean
from heidi_engine.bus.state import ACTIVE_STATUSES
from heidi_engine.ui.connect import NoSupervisor, find_supervisor
from heidi_engine.ui.status_view import resume_hint

if TYPE_CHECKING:
    from heidi_engine.ui.menu.actions import Controller

__all__ = ["OPTIONS", "BackOut", "FieldValidator", "Menu", "ask_value", "configure", "dashboard_command"]

OPTIONS: tuple[str, ...] = (
    "Start New Run", "Resume Last Run", "Stop Pipeline", "Pause Pipeline", "Resume Pipeline",
    "Configure Parameters", "View Dashboard", "Start HTTP Server", "Exit",
)  # fmt: skip
_EXIT = str(len(OPTIONS))
_HTTP_START_TIMEOUT_S = 10.0
EMPTY = '""'  # typed in a value prompt: the empty value (Enter alone keeps the current one)
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


def _current(path: Path) -> dict[str, str]:
    return {name: value for name, (value, _source) in _effective(path).items()}


def _effective(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """Each field's value as a run will use it, and where it comes from: ``default``, ``file`` or
    ``environment`` (``AUTOTRAIN_<NAME>`` in the environment overrides config.yaml)."""
    values = {name: (_shown(info.default), "default") for name, info in AutoTrainConfig.model_fields.items()}
    values.update({k: (_shown(v), "file") for k, v in file_values(path).items() if k in values})
    values.update({k: (v, "environment") for k, v in env_overrides(environ).items()})
    return values


def _source_mark(source: str) -> str:
    return "" if source == "file" else f"({'from the environment' if source == 'environment' else source})"


class BackOut(Exception):
    """Esc (or Ctrl+C) in a value prompt: leave this one field, keep everything else."""


def _back_out_keys() -> KeyBindings:
    keys = KeyBindings()

    @keys.add("escape", eager=True)
    @keys.add("c-c")
    def _back(event: KeyPressEvent) -> None:
        event.app.exit(exception=BackOut())

    return keys


class _KeepOrValidator(Validator):
    """Empty keeps the current value; anything typed is validated as the field's new value."""

    def __init__(self, name: str) -> None:
        self.field = FieldValidator(name)

    def validate(self, document: Document) -> None:
        text = document.text.strip()
        if text == EMPTY:
            self.field.validate(Document(""))
        elif text:
            self.field.validate(document)


def _takes_empty(name: str) -> bool:
    try:
        validate_field(name, "")
    except ConfigError:
        return False
    return True


def ask_value(session: PromptSession[str], name: str, current: str, source: str, **extra: Any) -> str:
    """Prompt for ``name`` with ``current`` shown as the default: Enter keeps it, typing replaces it,
    Esc or Ctrl+C raises :class:`BackOut`. Returns the value to use (``current`` when kept)."""
    mark = _source_mark(source)
    shown = clean(current, 40) if current else "(empty)"
    # A prompt's settings (toolbar, keys, completer) stick to its session: this field's help and its
    # Esc key must not outlive it, under the main menu or the next field name.
    one_field: PromptSession[str] = PromptSession(input=session.input, output=session.output)
    empty = f', {EMPTY} for empty' if _takes_empty(name) and current else ""
    raw = one_field.prompt(
        f"{name} [{field_rule(name)}] (Enter keeps {shown}{' ' + mark if mark else ''}{empty}, Esc backs out) = ",
        default="",
        validator=_KeepOrValidator(name),
        validate_while_typing=True,
        key_bindings=_back_out_keys(),
        **extra,
    )
    if raw.strip() == EMPTY:
        return ""
    return raw.strip() if raw.strip() else current


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
        effective = _effective(path)
        current = {name: value for name, (value, _source) in effective.items()}
        say(f"\nConfiguration ({path}; the values a run will use):")
        for name in SEED_FIELDS:
            value, source = effective[name]
            say(f"  {name:<18} {clean(value, 60):<38} {field_rule(name)} {_source_mark(source)}".rstrip())
        overridden = [n for n, (_v, src) in effective.items() if src == "environment" and n not in SEED_FIELDS]
        for name in overridden:
            say(f"  {name:<18} {clean(effective[name][0], 60):<38} {field_rule(name)} {_source_mark('environment')}")
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
        try:
            raw = ask_value(
                session,
                name,
                current[name],
                effective[name][1],
                completer=WordCompleter([c for c in choices if c], sentence=True),
                bottom_toolbar=toolbar,
            )
        except BackOut:
            say(f"{name} unchanged")
            continue
        if effective[name][1] == "environment":
            say(f"note: {ENV_PREFIX}{name} is set in the environment, which overrides config.yaml for runs started from here")
        if raw == current[name]:
            say(f"{name} unchanged")
            continue
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
        http = status.get("http")
        http_down = " · HTTP server down" if isinstance(http, dict) and http.get("error") else ""
        if run is None:
            return f"supervisor: pid {info.pid} · no run yet{http_down}"
        line = (
            f"supervisor: pid {info.pid} · {clean(str(run))} · {clean(str(status.get('status')))} · "
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
        """Ask for rounds and samples (Enter keeps what a run would use), then start; the supervisor too
        if needed. Refused before any question while a run is active."""
        busy = self._active_run()
        if busy is not None:
            self.controller.complain(f"{busy}; stop it first (option 3) or watch it (option 7)")
            return
        effective = _effective(self.controller.config_path)
        overrides: dict[str, str] = {}
        for name in ("ROUNDS", "SAMPLES_PER_ROUND"):
            value, source = effective[name]
            try:
                raw = ask_value(self.session, name, value, source)
            except BackOut:
                self.controller.say("(cancelled)")
                return
            if raw != value:
                overrides[name] = raw
        self.controller.start(overrides)

    def _active_run(self) -> str | None:
        """``a run is already running (run_…)`` when the supervisor has an active run, else ``None``."""
        try:
            info = find_supervisor(self.controller.home, timeout_s=1.0)
            with ControlClient(info, sender="menu", timeout_s=2.0) as client:
                status = client.call("status")
        except (NoSupervisor, BusError):
            return None
        if status.get("status") in ACTIVE_STATUSES:
            return f"a run is already {clean(str(status.get('status')))} ({clean(str(status.get('run_id')))})"
        return None

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
