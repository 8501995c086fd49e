"""``autotrain-menu --configure`` and the menu's "Configure Parameters": config.yaml edited field by field.

Completion and validation as you type: a value the schema refuses is shown with its rule and cannot be
entered, and a saved value keeps the file's comments (``dump_yaml_update``). :func:`ask_value` is the
one value prompt (Enter keeps the current value, Esc backs out), used by "Start New Run" too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
from heidi_engine.bus.exit_status import EXIT_OK
from heidi_engine.bus.redaction import clean
from heidi_engine.ui.menu.actions import Controller

__all__ = [
    "EMPTY",
    "BackOut",
    "ChoiceValidator",
    "FieldNameValidator",
    "FieldValidator",
    "ask_value",
    "configure",
    "effective_values",
]

EMPTY = '""'  # typed in a value prompt: the empty value (Enter alone keeps the current one)
# Values worth offering on Tab, beyond the field's current value and its default.
_SUGGESTIONS: dict[str, tuple[str, ...]] = {
    "BASE_MODEL": ("smollm2-135m-instruct", "mistralai/Mistral-7B-Instruct-v0.2"),
    "TEACHER_MODEL": ("gpt-4o-mini", "local:smollm2-135m-instruct"),
    "TASK_SOURCE": ("bank", "self-instruct", "file:"),
    "MAX_COST_USD": ("",),
}


# The summary above the field prompt: the seed's fields, with BATCH_SIZE beside GRAD_ACCUM (the two make
# the effective batch, so one without the other misleads).
_SUMMARY_FIELDS: tuple[str, ...] = tuple(
    field for name in SEED_FIELDS for field in ((name, "BATCH_SIZE") if name == "GRAD_ACCUM" else (name,))
)


class FieldValidator(Validator):
    """Validates one config field as it is typed; the error line names the rule (``range 1–100``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def validate(self, document: Document) -> None:
        try:
            validate_field(self.name, document.text)
        except ConfigError as exc:
            raise ValidationError(cursor_position=len(document.text), message=exc.problems[0]) from None


class ChoiceValidator(Validator):
    """Accepts only one of ``choices`` (surrounding blanks ignored); anything else shows ``hint``."""

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


def effective_values(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
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


class FieldNameValidator(Validator):
    """A config field's name, or empty; an unknown name is answered as the CLI answers it
    (``LORA_RR: unknown field (did you mean LORA_R?)``)."""

    def validate(self, document: Document) -> None:
        name = document.text.strip()
        if not name:
            return
        try:
            field_rule(name)
        except ConfigError as exc:
            raise ValidationError(cursor_position=len(document.text), message=f"{exc.problems[0]}; Tab lists them") from None


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
    return EXIT_OK


def _edit(controller: Controller, session: PromptSession[str]) -> None:
    path = controller.config_path
    names = _field_names()
    say = controller.say
    while True:
        effective = effective_values(path)
        current = {name: value for name, (value, _source) in effective.items()}
        say(f"\nConfiguration ({path}; the values a run will use):")
        for name in _SUMMARY_FIELDS:
            value, source = effective[name]
            say(f"  {name:<18} {clean(value, 60):<38} {field_rule(name)} {_source_mark(source)}".rstrip())
        overridden = [n for n, (_v, src) in effective.items() if src == "environment" and n not in _SUMMARY_FIELDS]
        for name in overridden:
            say(f"  {name:<18} {clean(effective[name][0], 60):<38} {field_rule(name)} {_source_mark('environment')}")
        say("  (every other field can be set too: Tab completes names)")
        name = session.prompt(
            "Field to change (empty to finish): ",
            completer=FuzzyWordCompleter(names),
            validator=FieldNameValidator(),
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
