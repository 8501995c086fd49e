"""The AutoTrain configuration: :mod:`.schema` (the model, its ranges and checks, and their messages),
:mod:`.sources` (defaults, ``config.yaml``, ``AUTOTRAIN_*`` variables and ``--set`` merged, every problem
collected) and :mod:`.yaml_file` (YAML 1.2 reading and comment-keeping edits). Import from here.
"""

from __future__ import annotations

from heidi_engine.bus.config.schema import (
    ENV_PREFIX,
    FIELD_NAMES,
    SEED_FIELDS,
    SUPERVISOR_START_FIELDS,
    WORK_SIZE_FIELDS,
    AutoTrainConfig,
    ConfigError,
    field_rule,
    start_only_problems,
)
from heidi_engine.bus.config.sources import (
    config_reference_markdown,
    dump_yaml_update,
    env_overrides,
    file_values,
    load_config,
    parse_override,
    validate_field,
    value_sources,
)

__all__ = [
    "ENV_PREFIX",
    "FIELD_NAMES",
    "SEED_FIELDS",
    "SUPERVISOR_START_FIELDS",
    "WORK_SIZE_FIELDS",
    "AutoTrainConfig",
    "ConfigError",
    "config_reference_markdown",
    "dump_yaml_update",
    "env_overrides",
    "field_rule",
    "file_values",
    "load_config",
    "parse_override",
    "start_only_problems",
    "validate_field",
    "value_sources",
]
