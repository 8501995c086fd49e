"""Where a configuration comes from: schema defaults, ``config.yaml``, ``AUTOTRAIN_*`` environment
variables and explicit overrides, merged with every problem of every source collected, one line each.
The model and its rules are in :mod:`heidi_engine.bus.config.schema`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import ValidationError

from heidi_engine.bus.config import yaml_file as _config_yaml
from heidi_engine.bus.config.schema import (
    ENV_PREFIX,
    AutoTrainConfig,
    ConfigError,
    _field_known,
    _from_text,
    _kind,
    _line,
    _reason,
    _show,
    _unknown,
    field_rule,
)


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The fields set in the environment (None: os.environ), by field name: ``AUTOTRAIN_ROUNDS`` sets
    ROUNDS. Bare field names are ignored, so a stray ``SEED`` or ``BATCH_SIZE`` never changes a run."""
    source = os.environ if environ is None else environ
    start = len(ENV_PREFIX)
    return {
        key[start:]: value
        for key, value in source.items()
        if key.startswith(ENV_PREFIX) and key[start:] in AutoTrainConfig.model_fields
    }


def _validate(values: Mapping[str, object], source: str) -> tuple[AutoTrainConfig | None, list[str]]:
    """Validate known fields (the rest defaulted); one problem line per failing field."""
    config, problems = _validate_named(values, source)
    return config, list(problems.values())


def _validate_named(values: Mapping[str, object], source: str) -> tuple[AutoTrainConfig | None, dict[str, str]]:
    """:func:`_validate` with each problem line keyed by the field it is about."""
    try:
        return AutoTrainConfig.model_validate(dict(values)), {}
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for error in exc.errors(include_url=False):
            name = str(error["loc"][0]) if error["loc"] else "?"
            if name in AutoTrainConfig.model_fields:
                problems.setdefault(name, _line(source, name, error["input"], _reason(name, error)))
            else:
                problems.setdefault(name, f"{source + ': ' if source else ''}{error['msg']}")
        return None, problems


def _from_texts_named(
    values: Mapping[str, object], source: str
) -> tuple[dict[str, object], list[tuple[str | None, str]]]:
    """Parse string values of known fields (others pass through, strictly typed); report the rest, each
    problem with its field (``None`` for an unknown key)."""
    parsed: dict[str, object] = {}
    problems: list[tuple[str | None, str]] = []
    for key, value in values.items():
        if key not in AutoTrainConfig.model_fields:
            problems.append((None, _unknown(f"{source}: ", str(key))))
        elif isinstance(value, str):
            try:
                parsed[key] = _from_text(key, value)
            except ValueError as exc:
                problems.append((key, _line(source, key, value, f"{exc} (rule: {field_rule(key)})")))
        else:
            parsed[key] = value
    return parsed, problems


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    warnings: list[str] | None = None,
) -> AutoTrainConfig:
    """The effective config: defaults < ``path`` < ``env`` (None: os.environ) < ``overrides``.

    The effective values are what is validated: a bad value that a later source replaces with a good
    one is not an error but a warning, appended to ``warnings`` when given (a ``--set`` can rescue a bad
    line in config.yaml). Raises ConfigError listing every other problem of every source, one line each.
    """
    merged: dict[str, object] = {}
    problems: list[tuple[str | None, str]] = []
    sources: list[tuple[str, Mapping[str, object], bool]] = []
    if path is not None:
        file_values, file_problems = _config_yaml.read_mapping(path)
        unknown = [key for key in file_values if key not in AutoTrainConfig.model_fields]
        problems += [(None, line) for line in file_problems]
        problems += [(None, _unknown(f"{os.fspath(path)}: ", key)) for key in unknown]
        file_values = {k: v for k, v in file_values.items() if k not in unknown}
        sources.append((os.fspath(path), file_values, False))
    sources.append(("environment", env_overrides(env), True))
    sources.append(("override", dict(overrides or {}), True))
    for source, values, textual in sources:
        parsed, parse_problems = _from_texts_named(values, source) if textual else (dict(values), [])
        checked = list(_validate_named(parsed, source)[1].items())
        bad = {name for name, _line in parse_problems + checked}
        rescued = [(n, line) for n, line in problems if n is not None and n in parsed and n not in bad]
        for _name, line in rescued:
            problems.remove((_name, line))
            if warnings is not None:
                warnings.append(f"{line} (ignored: {source} sets {_name})")
        problems += parse_problems + [(name, line) for name, line in checked]
        merged.update(parsed)
    if problems:
        raise ConfigError([line for _name, line in problems])
    config, final_problems = _validate(merged, "effective config")
    if config is None:
        raise ConfigError(final_problems)
    return config


def file_values(path: str | os.PathLike[str]) -> dict[str, object]:
    """The top-level values of a config file as written (YAML 1.2), even those the schema would refuse;
    empty when the file is missing or is not YAML."""
    values, _problems = _config_yaml.read_mapping(path)
    return values


def value_sources(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> dict[str, str]:
    """Where each field's effective value comes from: ``default``, ``file``, ``env AUTOTRAIN_<NAME>`` or
    ``--set`` (the highest source that sets it, the precedence of :func:`load_config`)."""
    sources = dict.fromkeys(AutoTrainConfig.model_fields, "default")
    if path is not None:
        sources.update({key: "file" for key in file_values(path) if key in sources})
    sources.update({key: f"env {ENV_PREFIX}{key}" for key in env_overrides(env)})
    sources.update({key: "--set" for key in overrides or {} if key in sources})
    return sources


def parse_override(text: str) -> tuple[str, str]:
    """Split ``KEY=VALUE`` (from ``--set``) into its key and raw string value; ConfigError if malformed."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError([f"override: {_show('', text)}: expected KEY=VALUE, e.g. ROUNDS=2"])
    if key not in AutoTrainConfig.model_fields:
        raise ConfigError([_unknown("override: ", key)])
    return key, value


def validate_field(name: str, raw: str) -> object:
    """Parse and validate one field given as a string (as typed in the menu); ConfigError names the rule."""
    _field_known(name)
    try:
        value = _from_text(name, raw)
    except ValueError as exc:
        raise ConfigError([_line("", name, raw, f"{exc} (rule: {field_rule(name)})")]) from None
    config, problems = _validate({name: value}, "")
    if config is None:
        raise ConfigError(problems)
    return getattr(config, name)


def dump_yaml_update(path: str | os.PathLike[str], updates: Mapping[str, object]) -> None:
    """Set ``updates`` in the YAML file at ``path``, keeping its comments and other lines; atomic, mode kept.

    String values are parsed per field type, like overrides; every value is validated first. A missing key
    is appended; a missing file is created (mode 0600).
    """
    source = os.fspath(path)
    parsed, problems = _from_texts_named(updates, "update")
    config, check_problems = _validate(parsed, "update")
    if problems or config is None:
        raise ConfigError([line for _name, line in problems] + check_problems)
    try:
        _config_yaml.update_file(path, {key: getattr(config, key) for key in parsed})
    except ValueError as exc:
        raise ConfigError([f"{source}: {exc}"]) from None


def config_reference_markdown() -> str:
    """A Markdown table of every field (type, default, rule, description), generated from the schema."""
    types = {"int": "int", "float": "float", "optional_float": "float or empty", "text": "str"}
    rows = ["| Field | Type | Default | Rule | Description |", "|---|---|---|---|---|"]
    for name, info in AutoTrainConfig.model_fields.items():
        default = _config_yaml.yaml_scalar(info.default)
        cells = [
            f"`{name}`",
            types[_kind(name)],
            f"`{default}`" if default else "*(empty)*",
            field_rule(name),
            info.description or "",
        ]
        # '<' would open an HTML tag in the rendered README ("local:<model>" would vanish).
        rows.append("| " + " | ".join(c.replace("|", "\\|").replace("<", "&lt;") for c in cells) + " |")
    return "\n".join(rows) + "\n"
